"""The smallest MCP upstream we could write: answers every POST with one fixed JSON-RPC result.

    python bench/upstream_echo.py --port 8000 [--host 127.0.0.1]

HTTP/1.1 with keep-alive on asyncio (uvloop when installed), no framework. Every request whose
headers and Content-Length body have arrived gets `200 application/json` with
`{"jsonrpc":"2.0","id":<the request's id>,"result":{"content":[{"type":"text","text":"bench-echo"}],
"isError":false}}` (what a tools/call result looks like), so the latency through Envoy is Envoy's and
ours, not the upstream's. Not an MCP server: no initialize, no sessions, no SSE, no validation of the
method. Chunked request bodies are read too (Envoy sends Content-Length for the bench requests).
`GET /healthz` answers 200 `ok`. SIGTERM/SIGINT stop it. `--link` adds a `resource_link` item to
the content (a tool that returns links: its results are read on the learn route, Envoy waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson

MARKER = b"bench-echo"          # what the load generator looks for in a successful answer
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
_RESULT_PREFIX = b'{"jsonrpc":"2.0","id":'
_RESULT_SUFFIX = b',"result":{"content":[{"type":"text","text":"' + MARKER + b'"}],"isError":false}}'
_HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
LINK = False
_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


_LINK_SUFFIX = (b',"result":{"content":[{"type":"text","text":"' + MARKER + b'"},{"type":"resource_link",'
                b'"uri":"crm://customers/bench-export.csv","name":"export"}],"isError":false}}')


def answer(body: bytes) -> bytes:
    try:
        msg = orjson.loads(body) if body else None
        mid = msg.get("id") if isinstance(msg, dict) else None
    except orjson.JSONDecodeError:
        mid = None
    payload = _RESULT_PREFIX + orjson.dumps(mid) + (_LINK_SUFFIX if LINK else _RESULT_SUFFIX)
    return _HEAD % len(payload) + payload


class Echo(asyncio.Protocol):
    __slots__ = ("transport", "buf")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._bad()
                return
            head = bytes(self.buf[:end]).lower()
            start = end + 4
            clen, chunked, close = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    try:
                        clen = int(value)
                    except ValueError:
                        return self._bad()
                elif name == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
                elif name == b"connection" and b"close" in value:
                    close = True
            if chunked:
                parsed = _dechunk(self.buf, start)
                if parsed is None:
                    return
                body, used = parsed
            else:
                if clen > _MAX_BODY:
                    return self._bad()
                if len(self.buf) < start + clen:
                    return
                body, used = bytes(self.buf[start:start + clen]), start + clen
            del self.buf[:used]
            assert self.transport is not None
            if head.startswith(b"get "):
                self.transport.write(_HEALTH)
            else:
                self.transport.write(answer(body))
            if close:
                self.transport.close()
                return

    def _bad(self) -> None:
        if self.transport is not None:
            self.transport.write(_BAD)
            self.transport.close()
        self.buf.clear()


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body starting at `pos`, or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0] or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)       # no trailers expected: the terminating CRLF
            return (bytes(out), end + 2) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    ap.add_argument("--link", action="store_true", help="every result also carries a resource_link")
    a = ap.parse_args(argv)
    global LINK
    LINK = a.link
    run = asyncio.run
    if a.loop != "asyncio":
        try:
            import uvloop
            run = uvloop.run
        except ImportError:
            if a.loop == "uvloop":
                raise SystemExit("uvloop is not installed") from None
    run(serve(a.host, a.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
