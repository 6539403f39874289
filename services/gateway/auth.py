"""API tokens: a bearer token in -> the caller's role (`read` or `admin`) out, compared by hash.

Tokens come from `API_TOKENS_READ` and `API_TOKENS_ADMIN` (comma-separated; see settings.py).
An entry is either the token itself or its hash, `sha256:<64 hex digits>` (what the embedded
mode keeps on disk). Only the SHA-256 digests are kept here and every presented token is compared
against all of them with `hmac.compare_digest`, so the time taken tells nothing about any token.
The tokens are random (32 bytes), which is why one fast hash is enough: there is no password to
guess, so a slow key-derivation function would only slow every request down.

HTTP callers send `Authorization: Bearer <token>`. A browser cannot set headers on a WebSocket,
so `/ws` also accepts the token as the `token` query parameter (the gateway writes no access log,
so the URL with its token is not written anywhere by the gateway itself).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Annotated, Final

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

HASH_PREFIX: Final = "sha256:"
TOKEN_BYTES: Final = 32
UNAUTHORIZED: Final = "missing or unknown API token"
FORBIDDEN: Final = "this API token may only read; the admin role is needed"


class Role(enum.StrEnum):
    """What a token may do: `read` every resource, or also `admin` (control) endpoints."""

    READ = "read"
    ADMIN = "admin"

    def allows(self, required: Role) -> bool:
        """Return whether this role may call an endpoint that requires `required`."""
        return self is Role.ADMIN or required is Role.READ


def generate_token() -> str:
    """Return a new random API token (43 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Return the stored form of a token: `sha256:` and its hex digest."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def is_hashed(entry: str) -> bool:
    """Return whether a configured entry is a token's hash rather than the token."""
    digest = entry.removeprefix(HASH_PREFIX)
    return entry.startswith(HASH_PREFIX) and len(digest) == 64 and _is_hex(digest)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def _digest(entry: str) -> bytes:
    if is_hashed(entry):
        return bytes.fromhex(entry.removeprefix(HASH_PREFIX))
    return hashlib.sha256(entry.encode()).digest()


class TokenRegistry:
    """The digests of the configured tokens and their roles; never the tokens themselves."""

    def __init__(self, *, read: Iterable[str], admin: Iterable[str]) -> None:
        self._digests: tuple[tuple[bytes, Role], ...] = (
            *((_digest(entry), Role.READ) for entry in read),
            *((_digest(entry), Role.ADMIN) for entry in admin),
        )

    def __len__(self) -> int:
        return len(self._digests)

    def role_of(self, token: str | None) -> Role | None:
        """Return the role of a presented token, or None if it is missing or unknown."""
        if not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        found: Role | None = None
        # No early exit: every stored digest is compared, whichever one matches.
        for digest, role in self._digests:
            if hmac.compare_digest(presented, digest) and found is not Role.ADMIN:
                found = role
        return found


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer <token>` header value, if it is one."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def registry_of(connection: HTTPConnection) -> TokenRegistry:
    """Return the token registry the app was created with."""
    registry: TokenRegistry = connection.app.state.tokens
    return registry


def connection_role(connection: HTTPConnection) -> Role | None:
    """Return the role of an HTTP request's bearer token, or None."""
    return registry_of(connection).role_of(bearer_token(connection.headers.get("authorization")))


def websocket_role(websocket: HTTPConnection) -> Role | None:
    """Return the role of a WebSocket client's token (the `Authorization: Bearer` header, else
    the `token` query parameter), or None: the caller then closes with 1008 before accepting."""
    token = bearer_token(websocket.headers.get("authorization"))
    if token is None:
        token = websocket.query_params.get("token")
    return registry_of(websocket).role_of(token)


# Declares the scheme in the OpenAPI document; the check itself is `_authorize`, which answers
# 401 (no or unknown token, with `WWW-Authenticate`) or 403 (known token, role too low).
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIToken",
    description="An API token with the read or the admin role: `Authorization: Bearer <token>`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authorize(connection: HTTPConnection, credentials: Credentials, required: Role) -> Role:
    token = credentials.credentials if credentials is not None else None
    role = registry_of(connection).role_of(token)
    if role is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not role.allows(required):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)
    return role


# `async def` so they run on the loop: a plain `def` dependency costs a worker thread hop.
async def require_read(connection: HTTPConnection, credentials: Credentials) -> Role:
    """Let a read or admin token through; 401 otherwise."""
    return _authorize(connection, credentials, Role.READ)


async def require_admin(connection: HTTPConnection, credentials: Credentials) -> Role:
    """Let an admin token through; 403 for a read token, 401 without a known token."""
    return _authorize(connection, credentials, Role.ADMIN)


# As a parameter (`role: AdminAccess`) or for a whole router:
# `APIRouter(dependencies=[Depends(require_admin)])`.
ReadAccess = Annotated[Role, Depends(require_read)]
AdminAccess = Annotated[Role, Depends(require_admin)]
