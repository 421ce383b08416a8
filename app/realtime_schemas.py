"""Request bodies of the realtime API (``/v1/realtime/...``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictStr

from app.schemas import JsonInt, Strict
from domain.realtime import DEFAULT_TTL_S, MAX_ID_LENGTH, MAX_TOPIC_LENGTH, MAX_TTL_S

# No control characters: ids and topics end up in logs and in frames.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class CreateRealtimeToken(Strict):
    client_id: StrictStr = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_PRINTABLE)
    device_id: StrictStr | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, pattern=_PRINTABLE)
    ttl_s: JsonInt = Field(DEFAULT_TTL_S, ge=1, le=MAX_TTL_S)


class PublishedEvent(Strict):
    type: StrictStr = Field(min_length=1, max_length=100, pattern=_PRINTABLE)
    # Any JSON value; the whole body is already bounded (1 MiB, 32 levels).
    data: Any = None


class Publish(Strict):
    client_id: StrictStr = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_PRINTABLE)
    device_id: StrictStr | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, pattern=_PRINTABLE)
    topic: StrictStr | None = Field(None, min_length=1, max_length=MAX_TOPIC_LENGTH, pattern=_PRINTABLE)
    event: PublishedEvent
