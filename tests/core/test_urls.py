"""URL canonicalisation and prefix matching, by example and by property."""

from __future__ import annotations

import string
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securesession import InvalidURLError
from securesession._urls import MAX_DEPTH, _describe, canonicalize, without_query, without_userinfo


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("HTTPS://Gw.Example.COM:8443/payments/", "https://gw.example.com:8443/payments"),
        ("https://gw.example.com/payments", "https://gw.example.com:443/payments"),
        ("http://gw.example.com/", "http://gw.example.com:80/"),
        ("http://gw.example.com", "http://gw.example.com:80/"),
        ("https://h/%7Euser/%41%3a%3B", "https://h:443/~user/A%3A%3B"),
        ("https://h/a/.b/..c/...", "https://h:443/a/.b/..c/..."),
        ("https://h/a?b=c#d", "https://h:443/a"),
        ("https://h/a#frag?x", "https://h:443/a"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example:443/x"),
        ("https://[0:0::1]:8443/x", "https://[::1]:8443/x"),
        ("https://example.com./x", "https://example.com:443/x"),
        ("https://h/a//b//", "https://h:443/a//b"),
    ],
)
def test_canonical_key(url: str, key: str) -> None:
    assert canonicalize(url).key == key


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h/x", "unsupported URL scheme 'ftp'"),
        ("h/x", "unsupported URL scheme"),
        ("https:///x", "has no host"),
        ("https://h:99999/", "invalid port"),
        ("https://h:0/", "invalid port 0"),
        ("https://exa mple.com/", "invalid host"),
        # Python 3.11+ urlsplit rejects the brackets itself; 3.10 leaves it to us.
        ("https://[::zz]/", "malformed URL|invalid IPv6 host"),
        ("https://xn--a.example/", "internationalised"),
        ("https://bad\u0080host.example/", "internationalised"),
    ],
)
def test_invalid_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidURLError, match=message):
        canonicalize(url)


@pytest.mark.parametrize(
    "url", ["https://alice:pw-SECRET@h/x", "https://token-SECRET@h/", "u:pw-SECRET@h/x"]
)
def test_userinfo_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(InvalidURLError) as caught:
        canonicalize(url)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("https://h/a?b=c#d", "https://h/a"),
        ("https://h/a#frag?x", "https://h/a"),
        ("https://h/a?", "https://h/a"),
        ("https://h/a", "https://h/a"),
        ("no scheme/x?y", "no scheme/x"),
    ],
)
def test_without_query_ends_a_url_at_its_query_or_fragment(url: str, bare: str) -> None:
    assert without_query(url) == bare


@pytest.mark.parametrize(
    "url",
    [
        "https://h:99999/x?token=SECRET",
        "ftp://h/x#SECRET",
        "https://h/a/../b?q=SECRET",
        "https://u@h?SECRET",
    ],
)
def test_refused_urls_are_quoted_without_query_or_fragment(url: str) -> None:
    with pytest.raises(InvalidURLError) as caught:
        canonicalize(url)
    assert "SECRET" not in str(caught.value)
    # The quoting drops them itself, whoever calls it.
    assert "SECRET" not in _describe(url)
    assert _describe("https://u:pw-SECRET@h/x?token=SECRET#f") == "'https://***@h/x'"
    # Malformed: whatever precedes an "@" is redacted all the same.
    for malformed, quoted in [
        ("https:///u:pw-SECRET@h/x", "'https://***@h/x'"),
        ("https:/u:pw-SECRET@h/x", "'***@h/x'"),
        ("https:/\\u:pw-SECRET@h/", "'***@h/'"),
        ("https://u:pw/SECRET@h/x", "'https://***@h/x'"),
        ("u:pw-SECRET@h://x/@y", "'***@y'"),
    ]:
        with pytest.raises(InvalidURLError) as caught:
            canonicalize(malformed)
        assert "SECRET" not in str(caught.value) and quoted in str(caught.value), malformed


@pytest.mark.parametrize(
    "path",
    [
        "/public/../payments/x",
        "/public/./x",
        "/public/%2e%2e/payments/x",
        "/public/%2E%2E/payments/x",
        "/public/.%2e/payments/x",
        "/public/%2e./payments/x",
        "/public/%2e/x",
        "/public/%252e%252e/payments/x",
        "/public/..;/payments/x",
        "/public/..%3b/payments/x",
        "/..",
    ],
)
def test_path_confusion_dot_segments_are_refused(path: str) -> None:
    with pytest.raises(InvalidURLError, match="dot segment"):
        canonicalize("https://gw.example" + path)


@pytest.mark.parametrize(
    "path",
    ["/public%2fpayments/x", "/public%2F..%2Fpayments", "/public%5cpayments", "/a\\b", "/a%252fb"],
)
def test_path_confusion_encoded_slashes_are_refused(path: str) -> None:
    with pytest.raises(InvalidURLError, match="encoded slash or a backslash"):
        canonicalize("https://gw.example" + path)


def test_ipv6_zone_ids_are_refused() -> None:
    with pytest.raises(InvalidURLError, match="zone id"):
        canonicalize("https://[fe80::1%25eth0]:8443/x")
    assert canonicalize("https://[fe80::1]:8443/x").host == "[fe80::1]"


def test_not_a_string() -> None:
    with pytest.raises(InvalidURLError, match="must be a str"):
        canonicalize(b"https://h/")  # type: ignore[arg-type]


def test_prefix_keys_longest_first_and_bounded() -> None:
    url = canonicalize("https://h/a/b/c")
    assert url.prefix_keys == (
        "https://h:443/a/b/c",
        "https://h:443/a/b",
        "https://h:443/a",
        "https://h:443/",
    )
    deep = canonicalize("https://h/" + "/".join(["s"] * (MAX_DEPTH + 50)))
    assert len(deep.prefix_keys) == MAX_DEPTH + 1


# -- properties ----------------------------------------------------------------------


def _unambiguous(segment: str) -> bool:
    """Segments that canonicalize accepts (dot segments and encoded slashes are refused)."""
    try:
        canonicalize("https://h/" + segment)
    except InvalidURLError:
        return False
    return True


_segment = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@", max_size=6
).filter(_unambiguous)
_path = st.lists(_segment, max_size=6).map(lambda segments: "/" + "/".join(segments))
_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
_url = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    _host,
    st.sampled_from(["", ":8443", ":443", ":80"]),
    _path,
)


@given(_url)
def test_canonicalisation_is_idempotent(url: str) -> None:
    once = canonicalize(url)
    assert canonicalize(once.key) == once


@given(_url, st.text(max_size=10), st.text(max_size=10))
def test_query_and_fragment_never_matter(url: str, query: str, fragment: str) -> None:
    assert canonicalize(f"{url}?{query}#{fragment}") == canonicalize(url)


@given(_host, st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=1, max_size=5))
def test_every_prefix_key_is_a_segment_prefix(host: str, segments: list[str]) -> None:
    url = canonicalize(f"https://{host}/" + "/".join(segments))
    for depth, key in enumerate(reversed(url.prefix_keys)):
        assert key == f"https://{host}:443/" + "/".join(segments[:depth])


_seg = st.text(alphabet="ab", min_size=1, max_size=2)


@settings(max_examples=300)
@given(
    st.lists(st.lists(_seg, max_size=4), max_size=8),
    st.lists(_seg, max_size=6),
)
def test_longest_prefix_matches_a_brute_force_reference(
    entries: list[list[str]], request: list[str]
) -> None:
    """The probe order finds exactly what a scan over all entries would."""
    keys = {canonicalize("https://h/" + "/".join(entry)).key for entry in entries}
    found = next(
        (key for key in canonicalize("https://h/" + "/".join(request)).prefix_keys if key in keys),
        None,
    )

    def is_prefix(entry: list[str]) -> bool:
        return request[: len(entry)] == entry

    matching = [entry for entry in entries if is_prefix(entry)]
    if not matching:
        assert found is None
    else:
        best = max(matching, key=len)
        assert found == canonicalize("https://h/" + "/".join(best)).key


def test_a_canonical_url_is_immutable_and_compared_by_its_parts() -> None:
    # The lookup memo hands one instance to every caller of a URL: none may change it.
    first = canonicalize("https://gw.example.com/payments/x")
    with pytest.raises(AttributeError, match="immutable"):
        first.host = "evil.example.com"
    with pytest.raises(AttributeError, match="immutable"):
        del first.prefix_keys
    assert first.host == "gw.example.com" and first.key == "https://gw.example.com:443/payments/x"
    same = canonicalize("HTTPS://GW.example.com:443/payments/x/")
    other = canonicalize("https://gw.example.com/payments")
    assert first == same and hash(first) == hash(same) and first != other
    assert first.prefix_keys == (
        "https://gw.example.com:443/payments/x",
        "https://gw.example.com:443/payments",
        "https://gw.example.com:443/",
    )
    assert "gw.example.com" in repr(first) and first != first.key


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("https://u:p@h.test/x", "https://h.test/x"),
        ("https://a@b@h.test:8443/x?q", "https://h.test:8443/x?q"),
        ("https://u@h.test?q@x.test/", "https://h.test?q@x.test/"),
        ("https://h.test#a@x.test/", "https://h.test#a@x.test/"),
        ("https://h.test?a@x.test", "https://h.test?a@x.test"),
        ("https://h.test/p@x.test", "https://h.test/p@x.test"),
    ],
)
def test_without_userinfo_reads_the_authority_as_urlsplit_does(url: str, bare: str) -> None:
    assert without_userinfo(url) == bare
    assert (bare != url) == ("@" in urlsplit(url).netloc)
    assert urlsplit(without_userinfo(url)).hostname == urlsplit(url).hostname


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab@:/?#\\.%4", max_size=24))
def test_without_userinfo_agrees_with_urlsplit_on_any_url(rest: str) -> None:
    url = "https://" + rest
    parts = urlsplit(url)
    assert (without_userinfo(url) != url) == ("@" in parts.netloc)
    assert "@" not in urlsplit(without_userinfo(url)).netloc
