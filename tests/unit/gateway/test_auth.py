"""API tokens: roles by hash, the 401/403 dependencies, WebSocket tokens, and refused settings."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.gateway.auth import (
    AdminAccess,
    ReadAccess,
    Role,
    TokenRegistry,
    generate_token,
    hash_token,
    require_admin,
    websocket_role,
)
from services.gateway.settings import GatewaySettings
from shared.settings import secrets_of

READ = "read-token-0123456789-abcdefghij"
ADMIN = "admin-token-0123456789-abcdefghij"
OTHER_ADMIN = generate_token()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.state.tokens = TokenRegistry(read=[READ], admin=[ADMIN, hash_token(OTHER_ADMIN)])

    @app.get("/read")
    async def read(role: ReadAccess) -> str:
        return role.value

    @app.get("/admin")
    async def admin(role: AdminAccess) -> str:
        return role.value

    @app.post("/admin-router", dependencies=[Depends(require_admin)])
    async def admin_by_dependency() -> str:
        return "done"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        role = websocket_role(websocket)
        if role is None:
            await websocket.close(code=1008)
            return
        await websocket.accept()
        await websocket.send_text(role.value)
        await websocket.close()

    return TestClient(app)


def test_registry_knows_plain_and_hashed_tokens_and_nothing_else() -> None:
    registry = TokenRegistry(read=[READ], admin=[hash_token(ADMIN)])

    assert registry.role_of(READ) is Role.READ
    assert registry.role_of(ADMIN) is Role.ADMIN
    assert registry.role_of(hash_token(ADMIN)) is None  # the stored hash is not a token
    assert registry.role_of(READ + "x") is None
    assert registry.role_of("") is None and registry.role_of(None) is None


def test_a_token_listed_for_both_roles_is_admin() -> None:
    assert TokenRegistry(read=[ADMIN], admin=[ADMIN]).role_of(ADMIN) is Role.ADMIN


def test_admin_implies_read_but_not_the_other_way() -> None:
    assert Role.ADMIN.allows(Role.READ) and Role.ADMIN.allows(Role.ADMIN)
    assert Role.READ.allows(Role.READ) and not Role.READ.allows(Role.ADMIN)


def test_generated_tokens_are_long_random_and_accepted_by_the_settings() -> None:
    tokens = {generate_token() for _ in range(100)}

    assert len(tokens) == 100 and all(len(token) >= 43 for token in tokens)
    GatewaySettings(_env_file=None, api_tokens_admin=tokens.pop())


@pytest.mark.parametrize("headers", [{}, bearer("not-a-known-token"), {"Authorization": READ}])
def test_missing_or_unknown_token_is_401_with_a_bearer_challenge(
    client: TestClient, headers: dict[str, str]
) -> None:
    for path in ("/read", "/admin"):
        response = client.get(path, headers=headers)

        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or unknown API token"}


def test_read_token_reads_and_is_403_on_admin_endpoints(client: TestClient) -> None:
    assert client.get("/read", headers=bearer(READ)).json() == "read"
    assert client.get("/admin", headers=bearer(READ)).status_code == 403
    assert client.post("/admin-router", headers=bearer(READ)).status_code == 403


def test_admin_tokens_pass_both_checks_whether_configured_plain_or_hashed(
    client: TestClient,
) -> None:
    for token in (ADMIN, OTHER_ADMIN):
        assert client.get("/read", headers=bearer(token)).json() == "admin"
        assert client.get("/admin", headers=bearer(token)).json() == "admin"
        assert client.post("/admin-router", headers=bearer(token)).json() == "done"
    assert client.get("/admin", headers={"Authorization": f"bearer {ADMIN}"}).status_code == 200


def test_websocket_token_comes_from_the_header_or_the_query(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=bearer(READ)) as websocket:
        assert websocket.receive_text() == "read"
    with client.websocket_connect(f"/ws?token={ADMIN}") as websocket:
        assert websocket.receive_text() == "admin"


@pytest.mark.parametrize("url", ["/ws", "/ws?token=wrong", "/ws?token="])
def test_websocket_without_a_known_token_is_refused(client: TestClient, url: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url) as ws:
        ws.receive_text()
    assert refused.value.code == 1008


def test_openapi_documents_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["APIToken"]["scheme"] == "bearer"
    assert schema["paths"]["/admin"]["get"]["security"] == [{"APIToken": []}]


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ({}, "API_TOKENS_ADMIN is empty"),
        ({"api_tokens_admin": ""}, "API_TOKENS_ADMIN is empty"),
        ({"api_tokens_admin": " , "}, "API_TOKENS_ADMIN is empty"),
        ({"api_tokens_admin": "short-token"}, "token 1 is shorter than 24 characters"),
        ({"api_tokens_admin": "change-me-change-me-change-me"}, "token 1 looks like a placeholder"),
        ({"api_tokens_admin": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "fewer than 8 different"),
        ({"api_tokens_admin": f"{ADMIN},my-default-token-0123456789"}, "token 2 looks like a"),
        ({"api_tokens_admin": ADMIN, "api_tokens_read": "secret"}, "API_TOKENS_READ: token 1"),
    ],
)
def test_gateway_refuses_to_start_with_empty_default_or_weak_tokens(
    tokens: dict[str, str], reason: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(_env_file=None, **tokens)

    message = str(refused.value)
    assert reason in message
    for value in tokens.values():
        for token in filter(None, (part.strip() for part in value.split(","))):
            assert token not in message  # a refused token is never echoed


def test_tokens_come_from_the_environment_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_TOKENS_READ", f"{READ}, {OTHER_ADMIN}")
    monkeypatch.setenv("API_TOKENS_ADMIN", hash_token(ADMIN))

    settings = GatewaySettings(_env_file=None)

    assert [t.get_secret_value() for t in settings.api_tokens_read] == [READ, OTHER_ADMIN]
    assert READ not in repr(settings) and READ not in str(settings.model_dump())


def test_every_token_is_a_secret_the_log_formatter_hides() -> None:
    settings = GatewaySettings(_env_file=None, api_tokens_read=READ, api_tokens_admin=ADMIN)

    assert {READ, ADMIN} <= set(secrets_of(settings))


def test_wildcard_cors_origin_is_refused() -> None:
    with pytest.raises(ValidationError, match="'\\*' is not allowed"):
        GatewaySettings(_env_file=None, api_tokens_admin=ADMIN, cors_origins="*")
