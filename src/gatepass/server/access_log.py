"""The access log without query strings.

Mail links carry their token in the query (``/reset-password?token=T``), and a
browser following one sends it to the server, whose access log would write it
down. Query strings are dropped from every access-log line instead of picking
out parameters: a key can be spelled many ways (``%74oken``) and still decode
to ``token``.
"""

from __future__ import annotations

import logging

REDACTED_QUERY = "?…"
#: uvicorn's access-log record: (client, method, path with query, HTTP version, status).
_PATH_ARG = 2


class DropQueryStrings(logging.Filter):
    """A filter for ``uvicorn.access`` that cuts each logged path at its ``?``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG:
            path = args[_PATH_ARG]
            if isinstance(path, str) and "?" in path:
                cut = path.split("?", 1)[0] + REDACTED_QUERY
                record.args = (*args[:_PATH_ARG], cut, *args[_PATH_ARG + 1 :])
        return True
