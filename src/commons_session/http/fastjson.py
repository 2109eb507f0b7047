"""JSON answers on the hot paths (reading and creating a session), rendered by orjson.

For the content these routes answer (string keys, strings, booleans, null, small integers) the
bytes are exactly those Starlette's ``JSONResponse`` renders (compact separators, UTF-8, no ASCII
escaping); orjson renders them about ten times faster (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

__all__ = ["FastJSONResponse"]


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
