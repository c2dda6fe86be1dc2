"""Which camera URLs may be opened, and what FFmpeg may do with them. Pure, except ``resolve`` (the system resolver).

A camera URL is an attacker's chance three ways, and each has its rule here:

* **Text smuggled into a protocol.** FFmpeg writes an RTSP or HTTP URL into its request line; a CR/LF in it (raw,
  or percent-encoded where a layer decodes it) adds lines of the attacker's choosing to a request sent to the
  camera's host and port (a Redis or memcached there runs them). ``check_text`` allows printable ASCII only and
  no percent-encoded control character anywhere, and the daemon hands FFmpeg the URL rebuilt from its checked
  parts (``canonical``), never the raw string.
* **The daemon as a proxy.** A camera added over the API could read local files (FFmpeg's text and image
  demuxers turn ``/etc/...`` into a picture the model reads) or reach internal hosts (cloud metadata at
  169.254.169.254). ``UrlPolicy`` says which schemes the API may add (network schemes only by default) and
  which networks a camera host may resolve to (link-local and metadata addresses denied by default; optional
  allow list). Configured cameras are the operator's and only get the text and host rules.
* **FFmpeg's reach.** Every source opens with a protocol whitelist and a format whitelist for its kind
  (``ffmpeg_whitelists``), so a redirect, a playlist entry or a probe cannot switch an HTTP camera to
  ``file:`` or a text demuxer. Redirects to another host, the hosts of an HLS playlist's variants and a name that
  resolves elsewhere between the check and FFmpeg's own lookup are not stopped by FFmpeg; the host rule is
  checked before every open, and the kernel enforces the same networks (systemd ``IPAddressDeny=``, README
  "Security").
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from livewatch.errors import CameraError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")

# Link-local (IPv4 and IPv6; 169.254.169.254 is the metadata service of AWS, GCP, Azure, OpenStack...), the
# metadata addresses that are not link-local (Alibaba, AWS's IPv6 one).
DEFAULT_DENY = ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128")
# Never a camera: "this host" (0.0.0.0 reaches local services on Linux), multicast, broadcast.
ALWAYS_DENY = tuple(
    ipaddress.ip_network(n) for n in ("0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8", "255.255.255.255/32")
)

_PERCENT_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_NUMERIC_HOST = re.compile(r"[0-9.]+|0[xX][0-9A-Fa-f.xX]*|[0-9]+(?:\.[0-9A-Fa-fxX]+)*")


def check_text(url: str, *, network: bool = True) -> None:
    """No control character anywhere. Network URLs (sent to a camera): printable ASCII only, no percent-encoded
    control characters, well-formed percent escapes. Local paths may hold spaces and non-ASCII letters."""
    if not url:
        raise CameraError("empty camera URL")
    if len(url) > 2048:
        raise CameraError("camera URL over 2048 characters")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000 for ch in url):
        raise CameraError("camera URL holds a control character")
    if not network:
        return
    if any(not "\x21" <= ch <= "\x7e" for ch in url):
        raise CameraError(
            "camera URL holds whitespace or a non-ASCII character (percent-encode it, e.g. %20)"
        )
    if _PERCENT_CONTROL.search(url):
        raise CameraError("camera URL holds a percent-encoded control character")
    if _BAD_PERCENT.search(url):
        raise CameraError("camera URL holds a '%' that does not start a %XX escape")


def check_host(host: str) -> str:
    """A DNS name or an IP literal, lower-cased. Ambiguous numeric forms (``0x7f.1``, ``2130706433``) are refused:
    resolvers read them as addresses that the text does not show."""
    if not host:
        raise CameraError("camera URL has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise CameraError("camera URL host is not a valid host name or IP address")
    if _NUMERIC_HOST.fullmatch(host.rstrip(".")) or host.rstrip(".").rsplit(".", 1)[-1].isdigit():
        raise CameraError("camera URL host is numeric but not a dotted IPv4 address")
    return host.lower()


def canonical(scheme: str, username: str | None, password: str | None, host: str, port: int | None, path: str,
              query: str) -> str:
    """The URL FFmpeg receives, rebuilt from checked parts (no fragment: livewatch's own options live there)."""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    if username is not None:
        userinfo = username if password is None else f"{username}:{password}"
        netloc = f"{userinfo}@{netloc}"
    url = f"{scheme}://{netloc}{path or '/'}"
    return f"{url}?{query}" if query else url


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (``10.0.0.0/8``, ``fe80::/10``, a bare address) to networks; ValueError names the bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network (CIDR such as 10.0.0.0/8 or fe80::/10)") from exc
    return tuple(out)


@dataclass(frozen=True)
class UrlPolicy:
    """What cameras added over the API may be (configured cameras are the operator's: see ``for_config``)."""

    api_schemes: frozenset[str] = frozenset(NETWORK_SCHEMES)
    allow: tuple[Network, ...] = ()  # empty: any address the deny list leaves
    deny: tuple[Network, ...] = parse_networks(DEFAULT_DENY)

    def check_scheme(self, scheme: str) -> None:
        if scheme not in self.api_schemes:
            allowed = ", ".join(sorted(self.api_schemes)) or "none"
            raise CameraError(f"cameras added over the API may use {allowed}; {scheme!r} is not allowed "
                              f"(security.api_schemes)")

    def address_allowed(self, address: IPAddress) -> bool:
        """Allowed when the address, and any IPv4 address it carries (mapped, compatible, 6to4, NAT64, Teredo
        server), pass; a deny matching either refuses it."""
        embedded = _embedded_ipv4(address)
        if embedded is not None and not self._allowed(embedded):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return True  # the mapped IPv4 address is what is reached, and it passed
        return self._allowed(address)

    def _allowed(self, address: IPAddress) -> bool:
        if any(address in n for n in ALWAYS_DENY if n.version == address.version):
            return False
        if any(address in n for n in self.deny if n.version == address.version):
            return False
        return not self.allow or any(address in n for n in self.allow if n.version == address.version)

    def check_resolved(self, host: str) -> None:
        """Resolve ``host`` now and check every address it gives (blocking: DNS)."""
        self.check_addresses(resolve(host))

    def check_addresses(self, addresses: Sequence[IPAddress]) -> None:
        """Every address the host resolves to must be allowed (a name with one bad address is refused whole)."""
        if not addresses:
            raise CameraError("the camera host does not resolve")
        for address in addresses:
            if not self.address_allowed(address):
                raise CameraError("the camera host resolves to an address this daemon may not reach "
                                  "(security.allow_networks / deny_networks)")


# NAT64 (well-known and local-use prefixes) and SIIT's IPv4-translated addresses carry the IPv4 address in the
# last 32 bits, as do the deprecated IPv4-compatible addresses (::a.b.c.d)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
          ipaddress.ip_network("::ffff:0:0:0/96"))
_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to by a standard translation, if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[0]
    if any(address in n for n in _NAT64) or (address in _COMPATIBLE and int(address) > 0xFFFF):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve(host: str) -> list[IPAddress]:
    """The host's addresses as the system resolver gives them (what FFmpeg will connect to)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise CameraError("the camera host does not resolve") from exc
    out: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


# Per kind of source: the protocols FFmpeg may open (nested opens included: RTP under RTSP, segments of an HLS
# playlist, redirects) and the demuxers it may probe. Text, subtitle, image and playlist-of-files demuxers are
# absent, so no source can turn a local text or image file into frames.
_VIDEO_CONTAINERS = "mov,matroska,mpegts,flv,avi,h264,hevc,mjpeg,mpjpeg"
_WHITELISTS: dict[str, tuple[str | None, str]] = {
    "rtsp": ("rtsp,rtsps,rtp,srtp,tcp,udp,tls", "rtsp"),
    "http": ("http,https,tcp,tls,crypto", f"hls,{_VIDEO_CONTAINERS}"),
    "file": ("file", _VIDEO_CONTAINERS),
    "webcam": (None, "video4linux2"),
    "testsrc": (None, "lavfi"),
}


# Per kind of source: the streams FFmpeg may create. A stream is what costs: RTSP sets up each one (with UDP
# transport two sockets apiece) and the probe opens a decoder for each. A hostile SDP listing 1,000 tracks cost 1,000
# SETUPs, 2,001 descriptors and ~300 MB per open (measured, PyAV 18.1 / FFmpeg 7); with these options one SETUP,
# 3 descriptors and ~6 MB. RTSP takes the first video track only: other media are skipped while the SDP is read
# and streams past ``max_streams`` are never created, so never set up. Containers keep a few streams (a video,
# its audio, subtitles), at most 16.
_STREAM_BOUNDS: dict[str, dict[str, str]] = {
    "rtsp": {"allowed_media_types": "video", "max_streams": "1"},
    "http": {"max_streams": "16"},
    "file": {"max_streams": "16"},
    "webcam": {"max_streams": "1"},
    "testsrc": {"max_streams": "1"},
}


def ffmpeg_whitelists(kind: str) -> dict[str, str]:
    """FFmpeg options that bound what a source of ``kind`` may reach and cost: protocol and format whitelists
    and the stream bounds."""
    protocols, formats = _WHITELISTS[kind]
    options = {"format_whitelist": formats, **_STREAM_BOUNDS[kind]}
    if protocols is not None:
        options["protocol_whitelist"] = protocols
    return options
