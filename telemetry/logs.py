"""Structured JSON logs, one object per line, with request/merchant/payment
correlation taken from context variables set by the HTTP edge."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
merchant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("merchant_id", default=None)
payment_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("payment_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in (("request_id", request_id), ("merchant_id", merchant_id), ("payment_id", payment_id)):
            value = var.get()
            if value:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn's per-request access log is replaced by our metrics.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
