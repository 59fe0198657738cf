"""Fixtures for the decision core: a real policy file, a spec learned the way ext_proc learns it."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.mcp.request import HttpRequest

HERE = Path(__file__).parent

TOOLS = [
    {"name": "lookup_customer", "description": "Look up one customer.",
     "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]}},
    {"name": "search_customers", "inputSchema": {
        "type": "object", "required": ["query"],
        "properties": {"query": {"type": "string"},
                       "options": {"anyOf": [{"$ref": "#/$defs/Opts"}, {"type": "null"}]}},
        "$defs": {"Opts": {"type": "object", "properties": {"limit": {"type": "integer", "maximum": 100},
                                                             "sort": {"enum": ["name", "tier"]}}}}}},
    {"name": "get_order", "inputSchema": {"type": "object", "properties": {
        "order": {"type": "object", "properties": {"id": {"type": "integer"}, "tenant": {"type": ["string", "integer"]}}},
        "note_owner": {"type": "string"}}}},
    {"name": "open_tool", "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}}},
    {"name": "export_customers", "inputSchema": {"type": "object", "properties": {"format": {"enum": ["csv", "json"]}}}},
    {"name": "routed", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}}},
]
RESOURCES = [{"uri": "crm://reports/summary", "name": "summary"}]
TEMPLATES = [{"uriTemplate": "crm://customers/{customer_id}", "name": "customer"}]
PROMPTS = [{"name": "draft_reply", "arguments": [{"name": "customer_id", "required": True}, {"name": "tone"}]}]

SUPPORT = {"iss": "https://issuer", "sub": "alice", "groups": ["support"], "customer_ids": ["c-100", 42],
           "tenant": "t1", "client_id": "agent"}
ADMIN = {"iss": "https://issuer", "sub": "root", "groups": ["admin"], "customer_ids": ["c-100"], "client_id": "agent"}


def learn(app: App, tools: list[dict[str, Any]] = TOOLS) -> None:
    app.specs.apply_page("crm", "tools", tools, first=True, last=True)
    app.specs.apply_page("crm", "resources", RESOURCES, first=True, last=True)
    app.specs.apply_page("crm", "resourceTemplates", TEMPLATES, first=True, last=True)
    app.specs.apply_page("crm", "prompts", PROMPTS, first=True, last=True)


@pytest.fixture
def app() -> App:
    a = App(str(HERE / "policy.yaml"), decision_out=io.BytesIO())
    learn(a)
    return a


def http(body: Any = None, *, claims: dict[str, Any] | None = SUPPORT, headers: dict[str, str] | None = None,
         method: str = "POST", authority: str = "crm.example.com", path: str = "/mcp", raw: bytes | None = None,
         partial: bool = False) -> HttpRequest:
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    h = {"content-type": "application/json"} if method == "POST" else {}
    h.update(headers or {})
    return HttpRequest(method=method, path=path, authority=authority, headers=h, body=data,
                       partial=partial,
                       metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}} if claims else {})


def call(name: str, arguments: Any = None, mid: Any = 1, **params: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, **params}
    if arguments is not None:
        p["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": p}


@pytest.fixture
def decide(app: App) -> Callable[..., Decision]:
    def run(*args: Any, **kw: Any) -> Decision:
        return app.check(http(*args, **kw))
    return run
