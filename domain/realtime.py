"""The realtime gateway's pure parts: tokens, frames, topics, routing rules and
the LISTEN/NOTIFY payload format. No I/O, no trio.

Tokens are ``rt1.<claims>.<mac>``: base64url JSON claims and a base64url
HMAC-SHA256 of ``"rt1." + claims`` under the deployment's realtime secret. They
are merchant-scoped (the claims carry the merchant id) and expire; any process
sharing the secret verifies them without a database round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

import orjson

from domain.errors import FrameRejected, InvalidToken, TokenExpired

TOKEN_VERSION = "rt1"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 86_400
# A client/device id is what merchants use as customer_id (≤ 255 characters).
MAX_ID_LENGTH = 255
MAX_TOPIC_LENGTH = 200
# Topics a client may (un)subscribe to: its own payments and orders.
SUBSCRIBABLE_TOPIC = re.compile(r"^(payment|order):[A-Za-z0-9_]{1,64}$")
# Event kinds a client receives without subscribing: its payments, orders and
# wallet accounts, and the refunds and disputes of its payments (docs/api.md, v1.1).
DELIVERED_KINDS = frozenset({"payment", "order", "account", "refund", "dispute"})
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay clear of it.
NOTIFY_LIMIT = 7900


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Claims:
    """What a verified token says: who may connect, until when."""

    merchant_id: str
    client_id: str
    device_id: str | None
    expires_at: int  # unix seconds
    # When it was issued (unix milliseconds): a deleted device refuses tokens
    # issued before its deletion. 0 for tokens made before this claim existed.
    issued_at_ms: int = 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def sign_token(secret: bytes, claims: Claims) -> str:
    """A token carrying ``claims``.

    Args:
      secret: the realtime HMAC key (the same in every process of a deployment).
      claims: merchant, client, optional device and expiry.

    Returns:
      ``rt1.<claims>.<mac>``, URL-safe (it travels in a query string).
    """
    body = _b64(json.dumps({"m": claims.merchant_id, "c": claims.client_id, "d": claims.device_id,
                            "exp": claims.expires_at, "iat": claims.issued_at_ms}, separators=(",", ":")).encode())
    signed = f"{TOKEN_VERSION}.{body}"
    return f"{signed}.{_mac(secret, signed)}"


def verify_token(secret: bytes, token: str, now: float) -> Claims:
    """Check a token's signature and expiry.

    Args:
      secret: the realtime HMAC key.
      token: what the client sent.
      now: the current unix time.

    Returns:
      The claims.

    Raises:
      InvalidToken: malformed, or not signed with ``secret``.
      TokenExpired: well signed but past its expiry.
    """
    if not token or len(token) > 4096:
        raise InvalidToken("A valid realtime token is required.")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise InvalidToken("Malformed realtime token.")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(secret, signed), parts[2]):
        raise InvalidToken("The realtime token's signature does not match.")
    try:
        data = json.loads(_unb64(parts[1]))
        claims = Claims(str(data["m"]), str(data["c"]), data["d"] if data["d"] is None else str(data["d"]),
                        int(data["exp"]), int(data.get("iat", 0)))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidToken("Malformed realtime token.") from None
    if claims.expires_at <= now:
        raise TokenExpired("The realtime token has expired; ask your backend for a new one.")
    return claims


# --------------------------------------------------------------------------- client frames


@dataclass(frozen=True)
class Subscribe:
    topic: str


@dataclass(frozen=True)
class Unsubscribe:
    topic: str


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Pong:
    pass


ClientFrame = Subscribe | Unsubscribe | Ack | Pong


def parse_client_frame(raw: str | bytes, max_bytes: int) -> ClientFrame:
    """Validate one frame a client sent.

    Args:
      raw: the frame's data (text frames are ``str``).
      max_bytes: the largest frame accepted (a client frame is a few dozen bytes).

    Returns:
      The typed frame.

    Raises:
      FrameRejected: with ``code`` one of ``binary_not_supported``,
        ``frame_too_large``, ``invalid_json``, ``invalid_frame``,
        ``unknown_type``, ``invalid_topic``.
    """
    if isinstance(raw, (bytes, bytearray)):
        raise FrameRejected("Binary frames are not supported; send JSON text frames.", code="binary_not_supported")
    if len(raw) > max_bytes:
        raise FrameRejected(f"Frames are limited to {max_bytes} bytes.", code="frame_too_large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise FrameRejected("The frame is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise FrameRejected("A frame must be a JSON object with a \"type\".", code="invalid_frame")
    kind = data.get("type")
    if kind in ("subscribe", "unsubscribe"):
        topic = data.get("topic")
        if not isinstance(topic, str) or not SUBSCRIBABLE_TOPIC.match(topic):
            raise FrameRejected("topic must be \"payment:<id>\" or \"order:<id>\".", code="invalid_topic")
        return Subscribe(topic) if kind == "subscribe" else Unsubscribe(topic)
    if kind == "ack":
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise FrameRejected("ack needs a non-negative integer seq.", code="invalid_frame")
        return Ack(seq)
    if kind == "pong":
        return Pong()
    raise FrameRejected("type must be one of subscribe, unsubscribe, ack, pong.", code="unknown_type")


# --------------------------------------------------------------------------- server frames


def _dumps(value: object) -> str:
    # orjson: every event frame of every delivered message is rendered here
    # (once per message, not per connection); stdlib json was ~1 % of the
    # server's CPU at 300 webhooks/s. Compact, UTF-8 as is.
    return orjson.dumps(value).decode()


def welcome_frame(connection_id: str, client_id: str, device_id: str | None) -> str:
    return _dumps({"type": "welcome", "connection_id": connection_id, "client_id": client_id,
                   "device_id": device_id})


def event_frame(seq: int, topic: str, event: object) -> str:
    return _dumps({"type": "event", "seq": seq, "topic": topic, "event": event})


def error_frame(code: str, message: str) -> str:
    return _dumps({"type": "error", "code": code, "message": message})


PING_FRAME = _dumps({"type": "ping"})


# --------------------------------------------------------------------------- routing


def topic_of(event_type: str, object_id: str) -> str | None:
    """The topic of an event a client receives unsubscribed, or None if clients never get it.

    ``payment.succeeded`` of ``pay_1`` → ``payment:pay_1``, ``refund.succeeded``
    of ``re_1`` → ``refund:re_1``, ``account.deposit.completed`` of ``txn_1`` →
    ``account:txn_1``. The event's ``customer_id`` (the payment's, for refunds
    and disputes) says whose it is.
    """
    kind = event_type.split(".", 1)[0]
    return f"{kind}:{object_id}" if kind in DELIVERED_KINDS else None


def client_topic(client_id: str) -> str:
    """The topic of a message published to a client without one."""
    return f"client:{client_id}"


def visible(conn_device: str | None, muted: frozenset[str] | set[str], msg_device: str | None,
            msg_topic: str) -> bool:
    """Whether a connection receives a message of its client.

    Every message reaches every connection of its client, except that a message
    for one device reaches only that device's connections, and a connection
    that unsubscribed from a topic no longer gets it live.
    """
    return (msg_device is None or msg_device == conn_device) and msg_topic not in muted


# --------------------------------------------------------------------------- NOTIFY payloads


@dataclass(frozen=True)
class Message:
    """One stored message of a client, with its frame rendered once for all connections."""

    seq: int
    topic: str
    device_id: str | None
    frame: str


@dataclass(frozen=True)
class Notice:
    """What one committed transaction added to one client's log: seqs ``first``..``last``.

    ``messages`` is None when they did not fit in the notification; the
    receiver then reads them from the database.
    """

    merchant_id: str
    client_id: str
    first: int
    last: int
    messages: tuple[Message, ...] | None
    traceparent: str | None = None  # the trace of the transaction that wrote them


@dataclass(frozen=True)
class Revoke:
    """A device was deleted: every process closes its connections (4001)."""

    merchant_id: str
    client_id: str
    device_id: str


def encode_revoke(merchant_id: str, client_id: str, device_id: str) -> str:
    """The ``pg_notify`` payload announcing a device's deletion."""
    return _dumps({"k": "revoke", "m": merchant_id, "c": client_id, "d": device_id})


def revoked_token(claims: Claims, not_before_ms: int | None) -> bool:
    """Whether a device token predates its device's deletion (refused at the handshake)."""
    return claims.device_id is not None and not_before_ms is not None and claims.issued_at_ms < not_before_ms


def encode_notice(merchant_id: str, client_id: str, messages: list[Message], traceparent: str | None = None) -> str:
    """The ``pg_notify`` payload for ``messages`` (consecutive seqs of one client).

    The header line is JSON; when everything fits under :data:`NOTIFY_LIMIT`
    bytes, each message's frame follows on its own line (JSON text never holds a
    raw newline), so receivers deliver without reading the database.
    """
    header = {"m": merchant_id, "c": client_id, "f": messages[0].seq, "l": messages[-1].seq}
    if traceparent:
        header["t"] = traceparent
    inline = dict(header, x=[[m.topic, m.device_id] for m in messages])
    text = "\n".join([_dumps(inline)] + [m.frame for m in messages])
    if len(text.encode()) < NOTIFY_LIMIT:
        return text
    return _dumps(header)


def decode_notice(payload: str) -> Notice | Revoke:
    """Parse a payload made by :func:`encode_notice` or :func:`encode_revoke`.

    Raises:
      ValueError: not such a payload.
    """
    lines = payload.split("\n")
    head = json.loads(lines[0])
    if head.get("k") == "revoke":
        return Revoke(str(head["m"]), str(head["c"]), str(head["d"]))
    first, last = int(head["f"]), int(head["l"])
    meta = head.get("x")
    messages = None
    if meta is not None:
        frames = lines[1:]
        if len(meta) != last - first + 1 or len(frames) != len(meta):
            raise ValueError("inline messages do not match the seq range")
        messages = tuple(Message(first + i, topic, device, frame)
                         for i, ((topic, device), frame) in enumerate(zip(meta, frames)))
    traceparent = head.get("t")
    return Notice(str(head["m"]), str(head["c"]), first, last, messages,
                  traceparent if isinstance(traceparent, str) else None)
