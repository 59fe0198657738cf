"""A hand-written 2025-03-26 streamable-HTTP MCP server for the list-filtering tests: it answers
JSON-RPC batches (which the SDK server does not), ids of any length, paginated lists, and, as the
request's `x-test-response` header asks, `application/json`, `text/event-stream` with one event per
message (`sse`), one event carrying the whole batch array (`sse-array`), or gzip-compressed JSON
whatever the client accepts (`gzip`). It trusts every caller
(the gateway is what is under test) and publishes the same lists to everyone.

Hand-written because the SDK server refuses batches and cannot be told to answer a batch as one SSE
event; stateless, so no session ids.
"""

from __future__ import annotations

import argparse
import gzip
from typing import Any

import orjson

TOOLS = [{"name": n, "description": f"{n.replace('_', ' ')} for the CRM.",
          "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}}
         for n in ("lookup_customer", "export_customers", "search_customers", "export_invoices",
                   "update_settings", "export_reports", "export_audit")]
RESOURCES = [{"uri": "crm://customers/c-100", "name": "c-100"}, {"uri": "crm://reports/daily", "name": "daily"}]
PROMPTS = [{"name": "draft_reply", "description": "Draft a reply to a customer."}]
LISTS = {"tools/list": ("tools", TOOLS), "resources/list": ("resources", RESOURCES), "prompts/list": ("prompts", PROMPTS)}
PAGE = 3


def answer(msg: Any) -> dict[str, Any] | None:
    if not isinstance(msg, dict) or "id" not in msg:
        return None                                   # a notification
    method, rid = msg.get("method"), msg["id"]
    params = msg.get("params") or {}
    if method == "initialize":
        return {"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": "2025-03-26", "serverInfo": {"name": "list-server", "version": "1"},
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}}}}
    if method in LISTS:
        field, items = LISTS[method]
        start = int(str(params.get("cursor") or "p0")[1:])
        result: dict[str, Any] = {field: items[start:start + PAGE]}
        if start + PAGE < len(items):
            result["nextCursor"] = f"p{start + PAGE}"
        return {"jsonrpc": "2.0", "id": rid, "result": result}
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = bytearray()
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if scope["method"] == "GET":
        await replay(headers, send)
        return
    doc = orjson.loads(bytes(body)) if body else None
    batch = isinstance(doc, list)
    answers = [a for m in (doc if batch else [doc]) if (a := answer(m)) is not None]
    if not answers:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    mode = headers.get("x-test-response", "json")
    if mode == "gzip":                                # compressed whatever the client accepts
        out = gzip.compress(orjson.dumps(answers if batch else answers[0]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]})
        await send({"type": "http.response.body", "body": out})
        return
    if mode == "json":
        out, ctype = orjson.dumps(answers if batch else answers[0]), b"application/json"
    elif mode == "sse-array":
        out, ctype = b"event: message\ndata: " + orjson.dumps(answers) + b"\n\n", b"text/event-stream"
    else:
        out = b": priming\n\n" + b"".join(b"id: %d\r\nevent: message\r\ndata: " % i + orjson.dumps(a) + b"\r\n\r\n"
                                        for i, a in enumerate(answers))
        ctype = b"text/event-stream"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    # in pieces, so events and JSON straddle ext_proc's chunks
    for i in range(0, len(out), 4096):
        await send({"type": "http.response.body", "body": out[i:i + 4096], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def replay(headers: dict[str, str], send: Any) -> None:
    """Resuming a stream (`Last-Event-ID`): the server replays what it had sent on it, here the
    answer to an earlier tools/list (and a notification)."""
    if not headers.get("last-event-id"):
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    events = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "resumed"}},
              answer({"jsonrpc": "2.0", "id": "earlier-list", "method": "tools/list"})]
    out = b"".join(b"id: %d\nevent: message\ndata: " % (i + 1) + orjson.dumps(e) + b"\n\n" for i, e in enumerate(events))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    import uvicorn
    # a token with 200 long group names is a large Authorization (or x-jwt-payload) header
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", h11_max_incomplete_event_size=256 * 1024)
