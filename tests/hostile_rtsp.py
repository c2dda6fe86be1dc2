"""A hostile RTSP server for the capture tests: its SDP lists ``tracks`` H.264 video tracks (and as many audio
tracks when asked), it answers every SETUP with 200 and counts them, answers PLAY, then sends nothing. Plain
sockets on loopback; FFmpeg's real RTSP demuxer talks to it."""

from __future__ import annotations

import re
import socket
import threading

# a real 320x240 H.264 baseline SPS/PPS, so FFmpeg's probe has a picture size for every track
_SPROP = "Z0LAFdkBQfsBEAAAAwAQAAADAyDxYuSA,aMuMsg=="


def sdp(tracks: int, audio: int = 0) -> str:
    """The audio tracks come first (as some cameras list them), then the video tracks."""
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=hostile", "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*"]
    for i in range(audio):
        lines += ["m=audio 0 RTP/AVP 97", "a=rtpmap:97 MPEG4-GENERIC/48000/2",
                  "a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
                  "indexdeltalength=3;config=1190", f"a=control:audio{i}"]
    for i in range(tracks):
        lines += ["m=video 0 RTP/AVP 96", "a=rtpmap:96 H264/90000",
                  f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={_SPROP}", f"a=control:track{i}"]
    return "\r\n".join(lines) + "\r\n"


class HostileRtsp:
    def __init__(self, tracks: int = 1000, audio: int = 0) -> None:
        self.body = sdp(tracks, audio).encode()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.setups = 0
        self.describes = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True, name="hostile-rtsp").start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(self._reply(head.decode("latin-1")))
        except OSError:
            return

    def _reply(self, head: str) -> bytes:
        method = head.split(" ", 1)[0]
        cseq = re.search(r"(?im)^CSeq:\s*(\d+)", head)
        headers = [f"CSeq: {cseq.group(1) if cseq else 0}", "Session: 12345678;timeout=60"]
        body = b""
        if method == "OPTIONS":
            headers.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN")
        elif method == "DESCRIBE":
            with self._lock:
                self.describes += 1
            body = self.body
            headers += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
        elif method == "SETUP":
            with self._lock:
                self.setups += 1
            transport = re.search(r"(?im)^Transport:\s*(.*)$", head)
            text = transport.group(1).strip() if transport else "RTP/AVP/TCP;unicast;interleaved=0-1"
            if "client_port" in text:
                text += ";server_port=40000-40001"
            headers.append(f"Transport: {text}")
        headers.append(f"Content-Length: {len(body)}")
        return ("RTSP/1.0 200 OK\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + body

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass
