"""Rewrite JSON-RPC responses inside a streamed HTTP response body, chunk by chunk.

Envoy's ext_proc (STREAMED) hands us the body in arbitrary chunks and lets us replace each one.
`BodyRewriter.feed(chunk, end)` returns what Envoy should send instead of that chunk:

* `application/json`: the body is held back (each chunk answered with nothing) and the rewritten
  whole is returned with the last chunk.
* `text/event-stream`: complete events are passed on as soon as they complete (rewritten if they
  carry a message the transform changes); a partial event waits for its next chunk, so an event
  split across chunks is reassembled, never cut.

Anything that cannot be read (not JSON, not JSON-RPC, over the size bound) is passed on unchanged:
the rewrite is a courtesy to the caller (what it is shown), never a security decision. Hand-written:
the SSE framing here must reproduce unchanged events byte for byte, which SSE client libraries do
not offer.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import orjson

MAX_HELD_BYTES = 8 * 1024 * 1024

Transform = Callable[[dict[str, Any]], "dict[str, Any] | None"]
# An event ends at an empty line: any line ending (CRLF, LF or CR, mixed) followed by another.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_BOM = b"\xef\xbb\xbf"
_LINE = re.compile(rb"\r\n|\n|\r")


class BodyRewriter:
    def __init__(self, mode: str, transform: Transform, max_held: int = MAX_HELD_BYTES) -> None:
        if mode not in ("json", "sse"):
            raise ValueError(mode)
        self.mode = mode
        self.transform = transform
        self.max_held = max_held
        self.rewrote = 0            # messages changed
        self.gave_up = False        # over the bound: everything since passes unchanged
        self._held = bytearray()

    def feed(self, chunk: bytes, end: bool) -> bytes:
        if self.gave_up:
            return chunk
        self._held += chunk
        if len(self._held) > self.max_held:
            self.gave_up = True
            out, self._held = bytes(self._held), bytearray()
            return out
        if self.mode == "json":
            if not end:
                return b""
            body, self._held = bytes(self._held), bytearray()
            return self._json(body)
        return self._sse(end)

    # -- JSON ------------------------------------------------------------------------------------
    def _json(self, body: bytes) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if isinstance(doc, list):
            changed = False
            for i, msg in enumerate(doc):
                new = self._apply(msg)
                if new is not None:
                    doc[i], changed = new, True
            return orjson.dumps(doc) if changed else body
        new = self._apply(doc)
        return body if new is None else orjson.dumps(new)

    def _apply(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or "result" not in msg:
            return None
        try:
            new = self.transform(msg)
            if new is not None:
                orjson.dumps(new)     # what cannot be written back is not rewritten
        except Exception:  # noqa: BLE001 - a view courtesy must never break the response
            return None
        if new is not None:
            self.rewrote += 1
        return new

    # -- SSE -------------------------------------------------------------------------------------
    def _sse(self, end: bool) -> bytes:
        out = bytearray()
        buf = self._held
        pos = 0
        while True:
            m = _EVENT_END.search(buf, pos)
            if m is None or (not end and m.end() == len(buf) and buf.endswith(b"\r")):
                break               # none yet, or a CR that may be the first half of a CRLF
            out += self._event(bytes(buf[pos:m.start()]), bytes(buf[m.start():m.end()]))
            pos = m.end()
        rest = bytes(buf[pos:])
        self._held = bytearray() if end else bytearray(rest)
        if end:
            out += rest
        return bytes(out)

    def _event(self, block: bytes, terminator: bytes) -> bytes:
        bom = _BOM if block.startswith(_BOM) else b""
        lines = _LINE.split(block[len(bom):])
        data = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
        if not data:
            return block + terminator
        event = next((ln[6:].strip() for ln in lines if ln.startswith(b"event:")), b"message")
        if event != b"message":
            return block + terminator
        try:
            msg = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return block + terminator
        new = self._apply(msg)
        if new is None:
            return block + terminator
        keep = b"\n".join(ln for ln in lines if not ln.startswith(b"data:"))
        return bom + (keep + b"\n" if keep else b"") + b"data: " + orjson.dumps(new) + b"\n\n"
