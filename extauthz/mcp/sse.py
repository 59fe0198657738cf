"""Incremental Server-Sent-Events parser (WHATWG HTML "event stream interpretation").

Envoy hands us a response body in arbitrary chunks: an event, a line, even the `\\r\\n` that ends a
line can straddle two chunks. `SseParser` keeps just enough state to resume anywhere and yields each
event as soon as its terminating blank line arrives. Pure: no I/O, no logging.

Memory is bounded: an event whose data (plus the line being read) grows past `max_event_bytes` is
discarded as it goes and skipped up to its end; `dropped` counts such events. Over-long comment lines
are discarded without costing the event they sit in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser", "DEFAULT_MAX_EVENT_BYTES"]

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n|\r|\n")
_FIELD_SLACK = 64      # a line may exceed the data bound by this much: room for "data: " and such


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str            # event type; "message" when the stream did not name one
    data: bytes           # data lines joined by "\n" (raw bytes: JSON parsers take them as they are)
    id: str = ""          # the last event id in effect when the event was dispatched
    retry: int | None = None   # the last `retry:` value seen on the stream, if any

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class SseParser:
    """Feed bytes in any chunking; get complete events back in order."""

    __slots__ = ("max_event_bytes", "dropped", "retry", "last_event_id", "_line", "_line_dropped",
                 "_line_comment", "_data", "_has_data", "_type", "_id", "_oversized", "_skip_lf",
                 "_head", "_at_start", "_closed")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        self.max_event_bytes = max_event_bytes
        self.dropped = 0                 # events discarded for exceeding max_event_bytes
        self.retry: int | None = None
        self.last_event_id = ""
        self._line = bytearray()         # the incomplete line carried over between chunks
        self._line_dropped = False       # that line was too long: its bytes are gone, it is non-empty
        self._line_comment = False       # ... and it was a comment (so the event survives)
        self._data = bytearray()
        self._has_data = False
        self._type = ""
        self._id = ""
        self._oversized = False          # the current event passed the bound: skip to its end
        self._skip_lf = False            # previous chunk ended in "\r": a leading "\n" is its pair
        self._head = b""                 # up to 2 bytes held at stream start while checking the BOM
        self._at_start = True
        self._closed = False

    # -- public -------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._closed or not chunk:
            return []
        if self._at_start:
            data = self._head + bytes(chunk)
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._head = data
                return []
            self._at_start, self._head = False, b""
            chunk = data[len(_BOM):] if data.startswith(_BOM) else data
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        events: list[SseEvent] = []
        pos, n = 0, len(chunk)
        for m in _EOL.finditer(chunk):
            start, end = m.span()
            if end == n and chunk[start] == 13 and end - start == 1:
                self._skip_lf = True     # a lone "\r" at the very end: maybe half of "\r\n"
            if self._line or self._line_dropped:
                self._append_partial(chunk[pos:start])
                line = bytes(self._line)
                dropped, comment = self._line_dropped, self._line_comment
                self._line.clear()
                self._line_dropped = self._line_comment = False
            else:
                line, dropped, comment = chunk[pos:start], False, False
                if len(line) > self.max_event_bytes + _FIELD_SLACK:
                    dropped, comment = True, line[:1] == b":"
            ev = self._process_line(line, dropped, comment)
            if ev is not None:
                events.append(ev)
            pos = end
        if pos < n:
            self._append_partial(chunk[pos:])
        return events

    def close(self) -> list[SseEvent]:
        """End of stream. Per the SSE spec an event without its terminating blank line is
        discarded (that is also what MCP clients do), so this returns no events; it exists so
        callers need not know that, and releases the buffers."""
        self._closed = True
        self._line.clear()
        self._data.clear()
        self._has_data = False
        return []

    @property
    def buffered_bytes(self) -> int:
        return len(self._line) + len(self._data) + len(self._head)

    # -- internals ----------------------------------------------------------------------------

    def _append_partial(self, piece: bytes) -> None:
        if not piece:
            return
        if self._line_dropped:
            return
        limit = self.max_event_bytes + _FIELD_SLACK
        if len(self._line) + len(piece) + (0 if self._oversized else len(self._data)) > limit:
            self._line_comment = (self._line[:1] or piece[:1]) == b":"
            self._line_dropped = True
            self._line.clear()
            return
        self._line += piece

    def _process_line(self, line: bytes, dropped: bool, comment: bool) -> SseEvent | None:
        if dropped:
            if not comment:
                self._overflow()
            return None
        if not line:
            return self._dispatch()
        if self._oversized or line[0] == 0x3A:          # skipping, or ":" comment
            return None
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1:]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            if len(self._data) + self._has_data + len(value) > self.max_event_bytes:
                self._overflow()
                return None
            if self._has_data:
                self._data += b"\n"
            self._data += value
            self._has_data = True
        elif name == b"event":
            self._type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value and value.isdigit():
                self.retry = int(value)
        return None

    def _overflow(self) -> None:
        self._oversized = True
        self._data.clear()
        self._has_data = False

    def _dispatch(self) -> SseEvent | None:
        self.last_event_id = self._id
        if self._oversized:
            self.dropped += 1
            self._oversized = False
            self._type = ""
            return None
        if not self._has_data:
            self._type = ""
            return None
        ev = SseEvent(self._type or "message", bytes(self._data), self.last_event_id, self.retry)
        self._data.clear()
        self._has_data = False
        self._type = ""
        return ev
