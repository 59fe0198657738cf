"""Rewrite JSON-RPC responses inside a streamed HTTP response body, chunk by chunk.

Envoy's ext_proc (STREAMED) hands us the body in arbitrary chunks and lets us replace each one.
`BodyRewriter.feed(chunk, end)` returns what Envoy should send instead of that chunk:

* `application/json`: the body is held back (each chunk answered with nothing) and the rewritten
  whole is returned with the last chunk.
* `text/event-stream`: complete events are passed on as soon as they complete (rewritten if they
  carry a message the transform changes); a partial event waits for its next chunk, so an event
  split across chunks is reassembled, never cut.

What cannot be read is the caller's decision, through two hooks: `on_error(msg)` replaces a
message whose transform raised (or whose replacement cannot be serialised), and `unreadable()`
replaces a body, or an SSE `message` event, that is not JSON, or one over the size bound (the
filtered-list rewriter, `extauthz.specs.responsefilter`, blanks lists and answers a JSON-RPC error there:
what cannot be filtered is not shown). Without the hooks such input passes on unchanged.
Hand-written: the SSE framing here must reproduce unchanged events byte for byte, which SSE client
libraries do not offer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

import orjson

MAX_HELD_BYTES = 8 * 1024 * 1024

Transform = Callable[[dict[str, Any]], "dict[str, Any] | None"]
Unreadable = Callable[[str], "bytes | None"]
# An event ends at an empty line: any line ending (CRLF, LF or CR, mixed) followed by another.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_BOM = b"\xef\xbb\xbf"
_LINE = re.compile(rb"\r\n|\n|\r")


class Rewriter(Protocol):
    """What ext_proc drives: `BodyRewriter`, or one that replaces a body it cannot read."""

    mode: str   # "json" or "sse"

    def feed(self, chunk: bytes, end: bool) -> bytes: ...


class BodyRewriter:
    def __init__(self, mode: str, transform: Transform, max_held: int = MAX_HELD_BYTES, *,
                 on_error: Transform | None = None, unreadable: Unreadable | None = None) -> None:
        if mode not in ("json", "sse"):
            raise ValueError(mode)
        self.mode = mode
        self.transform = transform
        self.max_held = max_held
        self.on_error = on_error
        self.unreadable = unreadable
        self.rewrote = 0            # messages changed
        self.gave_up = False        # over the bound: everything since passes unchanged (no hooks)
        self.replaced = 0           # bodies or events answered with `unreadable()`
        self._skipping = False      # SSE, with hooks: dropping an over-bound event to its end
        self._held = bytearray()

    def feed(self, chunk: bytes, end: bool) -> bytes:
        if self.gave_up:
            return chunk
        self._held += chunk
        if self._skipping:
            return self._skip(end)
        if self.mode == "json":
            if len(self._held) > self.max_held:
                return self._over_bound(b"", end)
            if not end:
                return b""
            body, self._held = bytes(self._held), bytearray()
            return self._json(body)
        out = self._sse(end)            # complete events leave the buffer; the bound is on the rest
        if len(self._held) > self.max_held:
            return self._over_bound(out, end)
        return out

    def _over_bound(self, out: bytes, end: bool) -> bytes:
        if self.unreadable is not None:
            return out + self._overflow(end)
        self.gave_up = True
        out, self._held = out + bytes(self._held), bytearray()
        return out

    def _replacement(self, why: str) -> bytes | None:
        assert self.unreadable is not None
        out = self.unreadable(why)
        if out is not None:
            self.replaced += 1
        return out

    def _overflow(self, end: bool) -> bytes:
        """Over the bound with hooks: nothing held is passed on. A JSON body is answered at its end;
        an SSE event is replaced now and the rest of it dropped."""
        if self.mode == "json":
            self._held = bytearray()
            self._skipping = True
            return self._skip(end)
        out = self._sse_event_replacement("too large")
        self._held = self._held[-3:]            # a terminator may straddle into the next chunk
        self._skipping = True
        return out + self._skip(end)

    def _skip(self, end: bool) -> bytes:
        if self.mode == "json":
            self._held = bytearray()
            if not end:
                return b""
            self._skipping = False
            return self._replacement("too large") or b""
        m = _EVENT_END.search(self._held)
        if m is None or (not end and m.end() == len(self._held) and self._held.endswith(b"\r")):
            self._held = self._held[-3:] if not end else bytearray()
            return b""
        self._skipping = False
        del self._held[:m.end()]
        return self._sse(end)

    def _sse_event_replacement(self, why: str) -> bytes:
        body = self._replacement(why)
        return b"event: message\ndata: " + body + b"\n\n" if body is not None else b""

    # -- JSON ------------------------------------------------------------------------------------
    def _json(self, body: bytes) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            if self.unreadable is None or not body.strip():
                return body
            out = self._replacement("not JSON")
            return body if out is None else out
        new = self._doc(doc)
        return body if new is None else new

    def _doc(self, doc: Any) -> bytes | None:
        """A message or a batch, rewritten: None when nothing in it changed."""
        if isinstance(doc, list):
            changed = False
            for i, msg in enumerate(doc):
                new = self._apply(msg)
                if new is not None:
                    doc[i], changed = new, True
            return orjson.dumps(doc) if changed else None
        new = self._apply(doc)
        return None if new is None else orjson.dumps(new)

    def _apply(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or "result" not in msg:
            return None
        try:
            new = self.transform(msg)
            if new is not None:
                orjson.dumps(new)     # what cannot be written back is not rewritten
        except Exception:  # noqa: BLE001 - the caller's hook decides what a failed message becomes
            if self.on_error is None:
                return None
            new = self.on_error(msg)
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
        payload = b"\n".join(data)
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if self.unreadable is None or not payload.strip():
                return block + terminator       # e.g. the SDK's empty priming event
            out = self._replacement("event not JSON")
            return block + terminator if out is None else bom + b"event: message\ndata: " + out + b"\n\n"
        new = self._doc(msg)
        if new is None:
            return block + terminator
        keep = b"\n".join(ln for ln in lines if not ln.startswith(b"data:"))
        return bom + (keep + b"\n" if keep else b"") + b"data: " + new + b"\n\n"
