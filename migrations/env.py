"""Alembic environment: a database URL in, the schema migrated (or, offline, the SQL printed)."""

from __future__ import annotations

import os
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from shared.store_schema import metadata

config = context.config

# Only the command line configures logging; a service calling upgrade() keeps its own.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    """Pick the URL: upgrade()'s argument, then `-x url=...`, then DATABASE_URL, then settings."""
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "url"
    )
    if url:
        return str(url)
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from shared.settings import CommonSettings

    return CommonSettings().database_url


def run_offline() -> None:
    """Print the migration SQL for the URL's dialect without connecting."""
    url = _database_url()
    dialect_name = sa.engine.make_url(url).get_backend_name()
    context.configure(
        url=url,
        literal_binds=True,
        target_metadata=metadata,
        render_as_batch=dialect_name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Connect and migrate in one transaction (where the database has transactional DDL)."""
    engine = sa.create_engine(_database_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            # SQLite cannot ALTER most things in place; batch mode copies the table instead.
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
