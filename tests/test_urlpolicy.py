"""The camera URL rules (livewatch.capture.urlpolicy, source.parse_source) over generated inputs."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livewatch.capture.source import SourceLimits, parse_source
from livewatch.capture.urlpolicy import UrlPolicy, check_host, ffmpeg_whitelists, parse_networks
from livewatch.errors import CameraError
from livewatch.log import redact_url

SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12).filter(lambda s: not s.isdigit())
hosts = st.one_of(
    st.lists(label, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
paths = st.text(SAFE.replace("@", ""), max_size=40).map(lambda p: "/" + p)
schemes = st.sampled_from(["rtsp", "rtsps", "http", "https"])
controls = st.sampled_from([chr(c) for c in [*range(0, 0x21), 0x7F]] + ["\u2028", "\u00a0", "é"])
percent_controls = st.sampled_from([f"%{c:02x}" for c in [*range(0, 0x20), 0x7F]] + ["%0D%0A", "%7f"])


def url_of(scheme: str, host: str, path: str, port: int | None = None) -> str:
    return f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"


@settings(max_examples=300)
@given(schemes, hosts, paths, st.one_of(st.none(), st.integers(1, 65535)))
def test_accepted_network_urls_reach_ffmpeg_as_plain_printable_text(scheme, host, path, port) -> None:
    url = url_of(scheme, host, path, port)
    try:
        spec = parse_source(url)
    except CameraError:
        return  # refusing is always safe; what is accepted must be clean
    assert all("\x21" <= ch <= "\x7e" for ch in spec.target)
    assert "#" not in spec.target and "\r" not in spec.target and "\n" not in spec.target
    assert spec.host is not None and spec.host in spec.target.lower()
    assert spec.options["protocol_whitelist"] and "file" not in spec.options["protocol_whitelist"].split(",")


@settings(max_examples=300)
@given(schemes, hosts, paths, st.integers(0, 60), controls)
def test_a_control_or_space_character_anywhere_is_refused(scheme, host, path, where, bad) -> None:
    url = url_of(scheme, host, path)
    where = min(where, len(url))
    with pytest.raises(CameraError):
        parse_source(url[:where] + bad + url[where:])


@settings(max_examples=300)
@given(schemes, hosts, paths, st.integers(len("rtsps://"), 80), percent_controls)
def test_a_percent_encoded_control_character_is_refused(scheme, host, path, where, bad) -> None:
    url = url_of(scheme, host, path)
    where = min(where, len(url))
    with pytest.raises(CameraError):
        parse_source(url[:where] + bad + url[where:])


def test_the_review_probe_is_refused_and_the_message_shows_no_raw_line_break() -> None:
    for probe in ("rtsp://127.0.0.1:6379/x\r\nFLUSHALL\r\n", "rtsp://127.0.0.1:6379/x%0d%0aFLUSHALL%0d%0a",
                  "rtsp://u:p%0a%0d@127.0.0.1/x", "rtsp://127.0.0.1/x?a=b\nc"):
        with pytest.raises(CameraError) as err:
            parse_source(probe)
        assert "\r" not in str(err.value) and "\n" not in str(err.value)


@settings(max_examples=200)
@given(st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=12),
       st.text(string.ascii_letters + string.digits + "-._~!$*+,;=", min_size=4, max_size=16), hosts, paths)
def test_credentials_never_appear_in_the_redacted_form(user, password, host, path) -> None:
    url = f"rtsp://{user}:{password}@{host}{path}"
    try:
        spec = parse_source(url)
    except CameraError as exc:
        assert f":{password}@" not in str(exc)
        return
    assert f":{password}@" not in spec.redacted and f":{password}@" in spec.target


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "0177.0.0.1x", "cam.123", "a..b", "-x.com", ""])
def test_ambiguous_or_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(CameraError):
        check_host(host)


@pytest.mark.parametrize("host,canonical", [("Cam.Local", "cam.local"), ("10.0.0.2", "10.0.0.2"), ("::1", "::1")])
def test_hosts_are_canonical(host: str, canonical: str) -> None:
    assert check_host(host) == canonical


@settings(max_examples=300)
@given(st.ip_addresses(network="169.254.0.0/16") | st.ip_addresses(network="fe80::/10"))
def test_link_local_and_metadata_are_denied_by_default_in_every_spelling(address) -> None:
    policy = UrlPolicy()
    assert not policy.address_allowed(address)
    if address.version == 4:
        assert not policy.address_allowed(ipaddress.IPv6Address(f"::ffff:{address}"))
    with pytest.raises(CameraError):
        policy.check_addresses([ipaddress.ip_address("192.0.2.1"), address])  # one bad address refuses the name


@settings(max_examples=300)
@given(st.ip_addresses(v=4))
def test_allow_list_admits_only_its_networks(address) -> None:
    policy = UrlPolicy(allow=parse_networks(["10.0.0.0/8", "127.0.0.1"]))
    inside = address in ipaddress.ip_network("10.0.0.0/8") or str(address) == "127.0.0.1"
    assert policy.address_allowed(address) == inside


def test_unspecified_multicast_and_broadcast_are_never_allowed() -> None:
    policy = UrlPolicy(deny=())
    for text in ("0.0.0.0", "0.1.2.3", "::", "224.0.0.251", "ff02::1", "255.255.255.255"):
        assert not policy.address_allowed(ipaddress.ip_address(text)), text
    assert policy.address_allowed(ipaddress.ip_address("169.254.169.254"))  # the operator emptied the deny list


def test_api_schemes_default_to_network_schemes() -> None:
    policy = UrlPolicy()
    for scheme in ("rtsp", "rtsps", "http", "https"):
        policy.check_scheme(scheme)
    for scheme in ("file", "webcam", "testsrc"):
        with pytest.raises(CameraError, match="security.api_schemes"):
            policy.check_scheme(scheme)


def test_a_refused_scheme_says_nothing_about_the_file_system(tmp_path: Path) -> None:
    real = tmp_path / "real.mp4"
    real.write_bytes(b"x")
    messages = set()
    for url in (str(real), str(tmp_path / "missing.mp4"), "/etc/shadow"):
        with pytest.raises(CameraError) as err:
            parse_source(url, scheme_check=UrlPolicy().check_scheme)
        messages.add(str(err.value))
    assert len(messages) == 1


def test_source_cost_bounds() -> None:
    limits = SourceLimits(max_pixels=1920 * 1080, max_fps=30)
    for url in ("testsrc://?size=16000x16000", "testsrc://?size=3840x2160", "testsrc://?rate=240",
                "testsrc://?rate=nan", "testsrc://?rate=-1", "testsrc://?size=8x8", "testsrc://?x=1",
                "testsrc://?size=640x360#loop=1"):
        with pytest.raises(CameraError):
            parse_source(url, limits=limits)
    spec = parse_source("testsrc://?size=1920x1080&rate=30", limits=limits)
    assert spec.max_pixels == 1920 * 1080 and spec.options["format_whitelist"] == "lavfi"


def test_whitelists_leave_out_text_and_image_demuxers() -> None:
    for kind in ("rtsp", "http", "file", "webcam", "testsrc"):
        formats = ffmpeg_whitelists(kind)["format_whitelist"].split(",")
        for risky in ("tty", "srt", "ass", "image2", "png_pipe", "concat", "lavfi" if kind != "testsrc" else "tty"):
            assert risky not in formats, (kind, risky)


def test_unknown_livewatch_options_are_errors() -> None:
    with pytest.raises(CameraError, match="unknown livewatch option"):
        parse_source("rtsp://cam.local/s#transprot=udp")
    assert redact_url("http://cam/x?user=admin&pwd=hunter2") == "http://cam/x?user=***&pwd=***"


@pytest.mark.parametrize("text", ["::a9fe:a9fe", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "2002:a9fe:a9fe::",
                                  "::ffff:0:a9fe:a9fe", "::ffff:169.254.169.254", "2001:0:4136:e378:8000:63bf:5601:5601"])
def test_ipv4_carried_in_ipv6_is_checked_too(text: str) -> None:
    # 169.254.169.254 as IPv4-compatible, NAT64 (both prefixes), 6to4, SIIT, mapped; Teredo's server 169.254.x
    address = ipaddress.ip_address(text)
    embedded = {"2001:0:4136:e378:8000:63bf:5601:5601": None}.get(text, "169.254.169.254")
    policy = UrlPolicy() if embedded else UrlPolicy(deny=parse_networks(["65.54.227.120/32"]))
    assert not policy.address_allowed(address)
    assert UrlPolicy().address_allowed(ipaddress.ip_address("64:ff9b::a00:1"))  # NAT64 to 10.0.0.1: allowed


def test_passwords_with_reserved_characters_are_redacted() -> None:
    from livewatch.log import redact_text

    for url in ("rtsp://admin:pa/ss@cam.example/x", "rtsp://admin:pa?ss@cam/x", "http://a:b#c@h/x"):
        with pytest.raises(CameraError) as err:
            parse_source(url)
        assert "pa/ss" not in str(err.value) and "pa?ss" not in str(err.value) and "b#c" not in str(err.value)
        assert "@" in redact_text(url) and redact_text(url).split("://", 1)[1].startswith("***@")
