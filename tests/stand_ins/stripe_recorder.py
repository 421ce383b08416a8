"""A scripted Stripe API stand-in for what localstripe cannot show: it records every
request (method, path, headers, form body) and answers each with the next scripted
response, written from Stripe's API reference (status and JSON body), or hangs
(a timeout). Real HTTP on a free port under trio, so the connector's SDK, httpx and
error handling run as they do against Stripe."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import h11
import trio


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class StripeRecorder:
    """Serve scripted answers; ``answers`` is consumed in order (status, body) or ``"hang"``."""

    answers: list = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.start_soon(trio.serve_listeners, self._handle, listeners, name="actor:test-stripe-recorder")

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request, body = None, b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            target = request.target.decode()
            self.requests.append(Recorded(request.method.decode(), target,
                                          {k.decode().lower(): v.decode() for k, v in request.headers},
                                          dict(parse_qsl(body.decode(), keep_blank_values=True))))
            answer = self.answers.pop(0) if self.answers else (500, {"error": {"type": "api_error"}})
            if answer == "hang":
                await trio.sleep_forever()
            status, payload = answer
            out = json.dumps(payload).encode()
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(out))), ("connection", "close")])))
            await stream.send_all(conn.send(h11.Data(data=out)) + conn.send(h11.EndOfMessage()))
