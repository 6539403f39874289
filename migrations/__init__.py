"""Alembic migrations: the only way the database schema changes (see `shared.store.upgrade`)."""
