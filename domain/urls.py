"""The shape of the http(s) URLs the API takes (webhook endpoints, ``return_url``).

One pattern, :data:`HTTP_URL`, is both what the server checks and what the OpenAPI
document publishes (app/openapi.py), so that a URL the document calls valid is never
refused and one it calls invalid is never taken: an absolute ``http``/``https`` URL
whose host is a DNS name (letters, digits, hyphens; labels of 1–63) or a bracketed
IPv6 address, an optional port (0–65535), then an optional path, query or fragment of
printable ASCII (anything else percent-encoded). No credentials, no spaces, no IDN
(give the ``xn--`` form). Every string it matches, ``urllib.parse.urlsplit`` reads
with a host and a valid port (tests/unit/test_urls.py checks it with hypothesis).
"""

from __future__ import annotations

import re

_HEX = r"[0-9A-Fa-f]{1,4}"
_IPV4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# RFC 4291's text forms: eight groups, one "::" standing for the zeros, or an IPv4 tail.
_IPV6 = "(?:" + "|".join([
    rf"(?:{_HEX}:){{7}}{_HEX}",
    rf"(?:{_HEX}:){{1,7}}:",
    rf"(?:{_HEX}:){{1,6}}:{_HEX}",
    rf"(?:{_HEX}:){{1,5}}(?::{_HEX}){{1,2}}",
    rf"(?:{_HEX}:){{1,4}}(?::{_HEX}){{1,3}}",
    rf"(?:{_HEX}:){{1,3}}(?::{_HEX}){{1,4}}",
    rf"(?:{_HEX}:){{1,2}}(?::{_HEX}){{1,5}}",
    rf"{_HEX}:(?::{_HEX}){{1,6}}",
    rf":(?:(?::{_HEX}){{1,7}}|:)",
    rf"(?:{_HEX}:){{6}}{_IPV4}",
    rf"::(?:[Ff]{{4}}(?::0{{1,4}})?:)?{_IPV4}",
    rf"(?:{_HEX}:){{1,4}}:{_IPV4}",
]) + ")"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HTTP_URL = (rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_LABEL}(?:\.{_LABEL})*\.?|\[{_IPV6}\])"
            rf"(?::{_PORT})?(?:[/?#][!-~]*)?$")
_HTTP_URL = re.compile(HTTP_URL)


def is_http_url(value: str) -> bool:
    """Whether ``value`` has the shape of :data:`HTTP_URL` (the whole string)."""
    return _HTTP_URL.fullmatch(value) is not None
