"""JSON answers, serialised with orjson."""

from __future__ import annotations

import orjson
from starlette.responses import Response


def json_response(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")
