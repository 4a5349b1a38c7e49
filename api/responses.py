"""JSON responses rendered with orjson.

FastAPI's own ``ORJSONResponse`` is deprecated; handlers return these directly, so FastAPI neither
validates nor re-encodes large payloads (the risk map has a thousand grids and is polled by every screen).
The declared ``response_model`` of each route still documents the body in OpenAPI, and the tests
validate real responses against those models.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

# Times end in "Z"; dict keys may be non-strings (level enums).
ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=ORJSON_OPTIONS)


class OrjsonResponse(JSONResponse):
    # A JSONResponse subclass so FastAPI documents the route's response_model in OpenAPI.
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):  # already rendered (cached)
            return content
        return dumps(content)


class GeoJsonResponse(OrjsonResponse):
    media_type = "application/geo+json"
