"""The embedded mode's API tokens: a data directory in -> the tokens' hashes out, and at first
start the new tokens themselves, to print once.

Only hashes are written (`api-tokens.json`, readable by its owner only): a copied data directory
gives nobody a token. A lost token cannot be shown again; delete the file to get new ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.gateway.auth import Role, generate_token, hash_token, is_hashed

FILE_NAME: Final = "api-tokens.json"


@dataclass(frozen=True, slots=True)
class StoredTokens:
    """The hashes of the read and admin tokens, and the tokens themselves if just created."""

    read_hashes: tuple[str, ...]
    admin_hashes: tuple[str, ...]
    created: dict[Role, str] | None = None


def load_or_create(data_dir: Path) -> StoredTokens:
    """Read the token hashes kept in `data_dir`, or create a read and an admin token first."""
    path = data_dir / FILE_NAME
    if path.exists():
        return _read(path)
    created = {Role.READ: generate_token(), Role.ADMIN: generate_token()}
    hashes = {role.value: [hash_token(token)] for role, token in created.items()}
    data_dir.mkdir(parents=True, exist_ok=True)
    # Created with owner-only permissions, and never half-written: a temporary file, renamed.
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(hashes, file, indent=2)
    temporary.replace(path)
    return StoredTokens(
        tuple(hashes[Role.READ.value]), tuple(hashes[Role.ADMIN.value]), created=created
    )


def _read(path: Path) -> StoredTokens:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        read, admin = stored.get(Role.READ.value, []), stored[Role.ADMIN.value]
    except (ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a token file ({error}); delete it for new tokens"
        ) from None
    entries = [*read, *admin]
    if not admin or not all(isinstance(e, str) and is_hashed(e) for e in entries):
        raise ValueError(f"{path} must hold sha256 hashes, with an admin one; delete it")
    return StoredTokens(tuple(read), tuple(admin))
