"""HTTP and WebSocket routers, one per resource, and the prefix of the versioned API."""

from __future__ import annotations

from typing import Final

# Each router carries its full path (not a prefix added at include time) so the matched route's
# template, used as the metrics label, is the path clients call.
API_PREFIX: Final = "/api/v1"
