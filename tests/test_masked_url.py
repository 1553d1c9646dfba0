"""One masking of passwords in URLs, for messages, logs and /readyz: the password never shows, the host does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from frame_buffer.checks import masked_url

hosts = st.from_regex(r"[a-z][a-z0-9.-]{0,20}|\[::1\]|127\.0\.0\.1", fullmatch=True)
# Upper case only, and every character a user may forget to percent-encode: never a substring of the rest.
passwords = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ:@/?#%!", min_size=3, max_size=20).filter(
    lambda pw: any(c.isalpha() for c in pw))
users = st.from_regex(r"[a-z]{0,8}", fullmatch=True)
tails = st.sampled_from(["", "/0", "/%2F", "/stream?x=1", "/live/cam0"])


schemes = st.sampled_from(["redis", "rediss", "amqp", "amqps", "rtsp", "rtsps"])
ports = st.sampled_from(["", ":1", ":6379"])


@given(st.tuples(schemes, users, passwords, hosts, ports, tails))
def test_the_password_never_shows_and_the_server_does(parts: tuple[str, str, str, str, str, str]) -> None:
    scheme, user, password, host, port, tail = parts
    url = f"{scheme}://{user}:{password}@{host}{port}{tail}"
    shown = masked_url(url)
    assert password not in shown
    assert shown == f"{scheme}://{user}:***@{host}{port}{tail}"


@given(st.text(max_size=60))
def test_any_text_is_masked_without_an_exception_and_without_credentials_unchanged(text: str) -> None:
    shown = masked_url(text)
    if "@" not in text:
        assert shown == text


def test_urls_without_a_password_are_shown_as_they_are() -> None:
    for url in ("redis://h:1/0", "unix:///tmp/redis.sock", "rtsp://cam/s@1", "redis://[::1]:6379", "x"):
        assert masked_url(url) == url
