"""domain/urls.py: the one URL pattern the server checks and the OpenAPI document publishes."""

from __future__ import annotations

import ipaddress
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import urls


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/x", "https://hooks.example.com/paycast?x=1", "HTTPS://Hooks.Example.COM.", "http://[::1]:9/",
    "https://93.184.216.34/", "http://[::ffff:127.0.0.1]/", "https://a.com:65535", "https://a.com#frag",
    "https://a.com?q=1", "http://[2001:db8::1]/h", "http://[1:2:3:4:5:6:7:8]/", "https://xn--mnchen-3ya.de/",
    "https://shop.example/return?order=1&x=%20y",
])
def test_urls_a_user_gives_are_taken(url):
    assert urls.is_http_url(url)


@pytest.mark.parametrize("url", [
    "", "ftp://x/", "http://", "//x/y", "http://a:b@x/", "http://x:99999/", "http://x:65536/", "https://919nfbx.com*",
    "http://[zz]/", "http://[::1/", "https://a..com", "https://-a.com/", "https://a-.com/", "https://a.com:/",
    "https://a.com/ space", "https://münchen.de/", "https://a.com/\u00e9", "javascript:alert(1)",
    "https://" + "a" * 64 + ".com/",
])
def test_urls_that_cannot_be_delivered_or_are_not_http_are_refused(url):
    assert not urls.is_http_url(url)


@settings(max_examples=3000, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.from_regex(urls.HTTP_URL, fullmatch=True))
def test_whatever_the_pattern_admits_urlsplit_reads_with_a_host_and_a_port(url):
    # The server and the document agree only if nothing the pattern admits is refused later.
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.hostname, url
    assert parts.port is None or 0 <= parts.port <= 65535
    assert parts.username is None and parts.password is None
    if parts.netloc.startswith("["):
        ipaddress.IPv6Address(parts.hostname)
