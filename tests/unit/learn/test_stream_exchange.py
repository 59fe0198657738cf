"""2024-11-05 event streams: the session comes from the `endpoint` event, results are paired with
entries ext_authz left for that session, and denials are only written between events."""

from __future__ import annotations

import orjson

from extauthz.mcp.learnheader import STREAM_MARK
from extauthz.specs.learn import Learner
from extauthz.specs.store import SpecStore
from extauthz.specs.streamexchange import StreamExchange

TOOLS = [{"name": "t1", "inputSchema": {"type": "object"}}]


def _event(data: bytes, name: str = "message") -> bytes:
    return b"event: " + name.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


def test_stream_learns_results_for_its_session_only():
    store = SpecStore()
    learner = Learner(store, lambda: "quarantine")
    ex = learner.exchange("crm", "alice", None, STREAM_MARK)
    assert isinstance(ex, StreamExchange)
    ex.on_response_headers(200, {"content-type": "text/event-stream"})
    ex.on_body(_event(b"/messages/?session_id=abc123", "endpoint"), False)
    assert ex.session_id == "abc123"
    learner.expect("crm", "other", [[7, "tools/list", True]])
    ex.on_body(_event(orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": {"tools": TOOLS}})), False)
    assert store.get("crm") is None                          # another session's request id
    learner.expect("crm", "abc123", [[7, "tools/list", True]])
    whole = _event(orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": {"tools": TOOLS}}))
    ex.on_body(whole[:10], False)
    assert ex.take_injection() == b""                        # nothing queued
    learner.inject("crm", "abc123", _event(b'{"jsonrpc":"2.0","id":9,"error":{}}'))
    assert ex.take_injection() == b""                        # mid-event: wait for the boundary
    ex.on_body(whole[10:], False)
    assert set(store.get("crm").tools) == {"t1"}
    assert ex.take_injection().startswith(b"event: message")
    assert ex.take_injection() == b""                        # delivered once
    assert not ex.done                                       # a stream stays open for more
