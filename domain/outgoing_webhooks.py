"""Outgoing merchant webhooks (Standard Webhooks v1), sans-IO: endpoint
validation, event matching, secrets, headers, and what an attempt's result
means for the delivery and the endpoint.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import os
import urllib.parse
from dataclasses import dataclass

from domain import urls
from domain.errors import InvalidRequest
from domain.events import EVENT_TYPES
from domain.signatures import standard_signature

# the contract (docs/api.md): 2xx within this many seconds is a success.
TIMEOUT_S = 15.0
MAX_URL_LENGTH = 2048
# Standard Webhooks: the secret is 24 to 64 random bytes; 32 is what its libraries make.
SECRET_BYTES = 32
WILDCARD = "*"
USER_AGENT = "Paycast-Webhooks/1"


def new_secret() -> str:
    """A signing secret: ``whsec_`` + standard base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def validate_enabled_events(value: object) -> list[str]:
    """``["*"]`` or a list of known event types (duplicates removed, order kept).

    Raises:
      InvalidRequest: naming ``enabled_events``.
    """
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("enabled_events must be a non-empty list of event types, or [\"*\"].",
                             param="enabled_events")
    unknown = [v for v in value if v != WILDCARD and v not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(f"Unknown event type {unknown[0]!r} in enabled_events.", param="enabled_events")
    return list(dict.fromkeys(value))


def matches(enabled_events: list[str], event_type: str) -> bool:
    """True if an endpoint with ``enabled_events`` wants ``event_type``."""
    return WILDCARD in enabled_events or event_type in enabled_events


class HostKind(str, enum.Enum):
    PUBLIC = "public"    # a public IP literal
    PRIVATE = "private"  # loopback, private, link-local, reserved... or a local name
    NAME = "name"        # a DNS name: only resolving it tells


def validate_url(value: object) -> tuple[str, str]:
    """Check an endpoint URL's shape (:data:`domain.urls.HTTP_URL`, as the OpenAPI document says it).

    Returns:
      ``(url, host)``: the host as ``urllib.parse`` reads it (lower case, no brackets).

    Raises:
      InvalidRequest: not an absolute http(s) URL with a host, or longer than
        :data:`MAX_URL_LENGTH` (``param`` url).
    """
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url must be an http(s) URL of at most {MAX_URL_LENGTH} characters.", param="url")
    if not urls.is_http_url(value):
        raise InvalidRequest("url must be an absolute http:// or https:// URL: a host name or [IPv6] address,"
                             " an optional port, then printable ASCII (no spaces, no credentials).", param="url")
    # The pattern admits only what urlsplit reads with a host and a valid port (tests/unit/test_urls.py).
    return value, urllib.parse.urlsplit(value).hostname


def classify_host(host: str) -> HostKind:
    """Whether ``host`` (a name or an IP literal) is known to be private."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local") or host.endswith(".internal"):
        return HostKind.PRIVATE
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostKind.NAME
    return HostKind.PRIVATE if is_private_address(address) else HostKind.PUBLIC


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> bool:
    """Loopback, private, link-local, shared, multicast, reserved or unspecified."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return not address.is_global or address.is_multicast


def headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed at ``timestamp``)."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, event_id, timestamp, body),
    }


class Verdict(str, enum.Enum):
    SUCCEEDED = "succeeded"        # 2xx
    DISABLE = "disable"            # 410 Gone: the endpoint asked us to stop
    RETRY = "retry"                # anything else: try again later, if attempts remain


def verdict(status_code: int | None) -> Verdict:
    """What one attempt's HTTP status (``None``: no response) means."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.SUCCEEDED
    if status_code == 410:
        return Verdict.DISABLE
    return Verdict.RETRY


@dataclass(frozen=True)
class NextStep:
    """After a failed attempt: retry after ``delay_s``, or give up (``delay_s`` None)."""

    delay_s: int | None


def after_failure(attempts_done: int, max_attempts: int, schedule: list[int]) -> NextStep:
    """When to try again after ``attempts_done`` attempts have failed.

    The schedule lists the delay before each attempt: ``schedule[0]`` before the
    first (usually 0), ``schedule[n]`` before attempt n + 1. ``max_attempts``
    can exceed the schedule's length after manual retries; then the last
    delay repeats.
    """
    if attempts_done >= max_attempts:
        return NextStep(None)
    return NextStep(schedule[min(attempts_done, len(schedule) - 1)])
