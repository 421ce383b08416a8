"""The shared WebSocket frame encoding of the realtime fast path gives exactly
wsproto's bytes (the server side of a connection without extensions)."""

from __future__ import annotations

from wsproto.frame_protocol import FrameProtocol

from app.realtime_socket import text_frame


def test_shared_text_frames_match_wsproto_at_every_length_boundary():
    for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        text = ("é" if n % 2 else "x") * (n // (2 if n % 2 else 1))
        expected = FrameProtocol(client=False, extensions=[]).send_data(text, True)
        assert text_frame(text) == bytes(expected), n
    assert text_frame("same") is text_frame("same")  # encoded once, reused
