"""Browser sessions and origins (pure): cookies that cannot be forged, replayed after logout or kept past their
expiry, and the origin rule that lets the daemon's own page in and keeps other sites (DNS rebinding included) out."""

from __future__ import annotations

from livewatch.server.session import Guesses, Sessions, host_allowed, origin_allowed


def test_a_session_cookie_is_valid_until_it_expires_or_is_revoked() -> None:
    now = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    cookie = sessions.issue()
    assert sessions.valid(cookie)
    expiry, nonce, mac = cookie.split(".")
    assert not sessions.valid(f"{int(expiry) + 3600}.{nonce}.{mac}")  # a longer life cannot be forged
    assert not sessions.valid(f"{expiry}.{nonce}x.{mac}")
    assert not sessions.valid(f"{expiry}.{nonce}.{mac[:-1]}{'1' if mac[-1] == '0' else '0'}")
    for junk in (None, "", "a.b", "a.b.c.d", "x" * 500, "1.2.3"):
        assert not sessions.valid(junk)
    assert not Sessions(ttl_s=60, clock=lambda: now[0]).valid(cookie)  # another daemon process, another key
    other = sessions.issue()
    sessions.revoke(cookie)
    assert not sessions.valid(cookie) and sessions.valid(other)  # logout ends that session only
    now[0] += 61
    assert not sessions.valid(other)
    sessions.revoke(other)  # expired: nothing to remember, and the revoked list forgets what expired
    assert not sessions._revoked


def test_origins() -> None:
    allowed = ("https://cams.example.com",)
    assert origin_allowed(None, "127.0.0.1:8765", "http", ())  # not a browser
    assert origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765", "http", ())  # the daemon's own page
    assert origin_allowed("http://localhost:8765", "localhost:8765", "http", ())
    assert origin_allowed("http://[::1]:8765", "[::1]:8765", "http", ())
    assert origin_allowed("https://cams.example.com", "cams.example.com", "https", allowed)
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8765", "http", ())  # another port: same site
    assert not origin_allowed("http://evil.example:8765", "evil.example:8765", "http", ())  # DNS rebinding
    assert not origin_allowed("https://127.0.0.1:8765", "127.0.0.1:8765", "http", ())  # scheme differs
    assert not origin_allowed("null", "127.0.0.1:8765", "http", ())
    assert not origin_allowed("http://127.0.0.1:8765", None, "http", ())
    assert not origin_allowed("http://a b:1", "a b:1", "http", ())


def test_wrong_tokens_are_counted_per_address_and_forgotten_after_the_period() -> None:
    now = [0.0]
    guesses = Guesses(count=3, period=60, peers=2, total=100, clock=lambda: now[0])
    assert [guesses.wrong("10.0.0.1") for _ in range(4)] == [False, False, False, True]
    assert not guesses.wrong("10.0.0.2")  # another address keeps its own count
    assert 59 < guesses.retry_after("10.0.0.1") <= 60 and guesses.retry_after("10.0.0.2") == 0
    now[0] = 61
    assert not guesses.wrong("10.0.0.1")
    for peer in ("a", "b", "c"):  # bounded: the oldest address is forgotten
        guesses.wrong(peer)
    assert len(guesses._wrong) == 2 and "10.0.0.1" not in guesses._wrong


def test_wrong_tokens_from_everyone_have_a_limit_and_a_flood_adds_nothing() -> None:
    now = [0.0]
    guesses = Guesses(count=3, period=60, total=5, clock=lambda: now[0])
    assert [guesses.wrong(f"10.0.0.{i}") for i in range(7)] == [False] * 5 + [True] * 2  # 7 addresses, 5 in all
    assert 59 < guesses.retry_after("10.0.0.99") <= 60  # everyone waits for the global window
    for _ in range(10_000):
        guesses.wrong("10.0.0.1")
    assert len(guesses._wrong["10.0.0.1"]._times) == 3 and len(guesses._all._times) == 5
    now[0] = 60.5
    assert not guesses.wrong("10.0.0.9")


def test_hosts_that_may_reach_the_daemon_without_the_token() -> None:
    allowed = ("https://cams.example.com", "https://ops.example.com:8443")
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "192.168.1.5", "cams.example.com",
                 "ops.example.com:8443"):
        assert host_allowed(host, allowed), host
    for host in ("rebind.evil.example:8765", "cams.example.com.evil.example", "ops.example.com", None, ""):
        assert not host_allowed(host, allowed), host
