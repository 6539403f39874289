"""HTTP and WebSocket routers, one per resource, and the prefix of the versioned API."""

from __future__ import annotations

from typing import Any, Final

from services.gateway.models import ErrorDetail

# Each router carries its full path (not a prefix added at include time) so the matched route's
# template, used as the metrics label, is the path clients call.
API_PREFIX: Final = "/api/v1"

# The refusals every route behind a token may answer with, for the OpenAPI document.
PROTECTED_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorDetail, "description": "No API token, or an unknown one"},
    403: {"model": ErrorDetail, "description": "The token's role may not do this"},
    413: {"model": ErrorDetail, "description": "Request body over the size limit"},
    429: {"model": ErrorDetail, "description": "Rate limit exceeded: see `Retry-After`"},
}
