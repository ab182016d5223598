"""novncproxy's pure admission rules: token location, Origin (CVE-2015-0259), `//` paths."""

from __future__ import annotations

import pytest
from novncproxy.admission import (
    OriginPolicy,
    check_origin,
    client_address,
    effective_scheme,
    host_of,
    refused_target,
    token_from_request,
    token_is_plausible,
)

T = "tok-0123456789abcdef0123456789abcdef"
NONE = OriginPolicy()


@pytest.mark.parametrize(("target", "cookie", "expected"), [
    (f"/websockify?token={T}", None, T),
    (f"/vnc_lite.html?path=%3Ftoken%3D{T}", None, T),
    (f"/?path=websockify%3Ftoken%3D{T}&x=1", None, T),
    ("/websockify", f"lang=en; token={T}", T),
    (f"/websockify?token={T}", "token=other", T),  # the query wins over the cookie
    (f"/websockify?token=&path=%3Ftoken%3D{T}", None, T),  # empty token: look in path
    ("/websockify", None, None),
    ("/websockify?token=", "token=", None),
    ("/websockify?path=%3Ftoken%3D", None, None),
    ("/websockify", "garbage;;=\x00", None),
])
def test_token_from_query_path_or_cookie(target: str, cookie: str | None,
                                         expected: str | None) -> None:
    assert token_from_request(target, cookie) == expected


def test_token_plausibility() -> None:
    assert token_is_plausible(T)
    assert not token_is_plausible("")
    assert not token_is_plausible(None)
    assert not token_is_plausible("x" * 257)
    assert not token_is_plausible("ab\ncd")


@pytest.mark.parametrize(("target", "refused"), [
    ("//evil.com", True),
    ("//evil.com/websockify?token=x", True),
    ("/%2F/evil.com", True),
    ("/%2f%2fevil.com", True),  # decodes to "///evil.com"
    ("/\\/evil.com", True),
    ("/websockify", False),
    ("/static/console.js", False),
    ("/?path=//evil.com", False),  # only the path matters, not the query
])
def test_double_slash_paths(target: str, refused: bool) -> None:
    assert refused_target(target) is refused


@pytest.mark.parametrize(("header", "host"), [
    ("example.com", "example.com"),
    ("Example.COM:6080", "example.com"),
    ("127.0.0.1:6080", "127.0.0.1"),
    ("[::1]:6080", "::1"),
    ("", None),
])
def test_host_of(header: str, host: str | None) -> None:
    assert host_of(header) == host


def test_no_origin_is_allowed() -> None:
    assert check_origin(None, "proxy.example:6080", "http", NONE).allowed


def test_same_host_is_allowed_other_host_is_not() -> None:
    assert check_origin("http://proxy.example:6080", "proxy.example:6080", "http", NONE).allowed
    assert check_origin("http://PROXY.example", "proxy.example:6080", "http", NONE).allowed
    verdict = check_origin("http://evil.example", "proxy.example:6080", "http", NONE)
    assert not verdict.allowed and "host" in verdict.reason
    assert not check_origin("null", "proxy.example", "http", NONE).allowed
    assert not check_origin("not a url", "proxy.example", "http", NONE).allowed
    assert not check_origin("http://proxy.example", None, "http", NONE).allowed


def test_allowed_list_is_frozen_and_used() -> None:
    policy = OriginPolicy.from_config(["Console.Example"], [])
    assert check_origin("http://console.example", "proxy.example", "http", policy).allowed
    assert not check_origin("http://other.example", "proxy.example", "http", policy).allowed
    # asking about a host never adds it (Nova bug 2158919)
    check_origin("http://proxy.example", "proxy.example", "http", policy)
    assert policy.allowed_hosts == frozenset({"console.example"})
    with pytest.raises(AttributeError):
        policy.allowed_hosts.add("x")  # type: ignore[attr-defined]


def test_scheme_must_match_how_we_were_reached() -> None:
    assert check_origin("https://proxy.example", "proxy.example", "https", NONE).allowed
    assert not check_origin("http://proxy.example", "proxy.example", "https", NONE).allowed
    assert not check_origin("https://proxy.example", "proxy.example", "http", NONE).allowed
    assert check_origin("wss://proxy.example", "proxy.example", "https", NONE).allowed


def test_forwarded_proto_only_from_trusted_proxies() -> None:
    policy = OriginPolicy.from_config([], ["10.0.0.2"])
    assert effective_scheme(False, "10.0.0.2", "https", policy) == "https"
    assert effective_scheme(False, "::ffff:10.0.0.2", "https, http", policy) == "https"
    assert effective_scheme(False, "10.0.0.9", "https", policy) == "http"  # untrusted peer
    assert effective_scheme(True, "10.0.0.9", "http", policy) == "https"
    assert effective_scheme(False, "10.0.0.2", None, policy) == "http"
    assert effective_scheme(False, "10.0.0.2", "gopher", policy) == "http"


def test_client_address_from_trusted_proxies_only() -> None:
    policy = OriginPolicy.from_config([], ["10.0.0.2"])
    assert client_address("10.0.0.2", "1.2.3.4, 5.6.7.8", policy) == "5.6.7.8"
    assert client_address("10.0.0.9", "1.2.3.4", policy) == "10.0.0.9"
    assert client_address("10.0.0.2", None, policy) == "10.0.0.2"
