"""Shared pieces of the benchmarks: a deterministic 1,000-tool spec with pydantic-/zod-like input
schemas, the caller's claims, the request kinds, and small helpers (percentiles, tables, ports).

Nothing here times anything. Every generator is seeded, so two runs measure the same inputs.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POLICY = HERE / "policy.yaml"
if str(ROOT) not in sys.path:           # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

SERVER = "crm"
AUTHORITY = "127.0.0.1:10000"
PATH = "/mcp"
SESSION_ID = "3f0b6c1e-bench-4a51-9c1d-5b7e2f0a9d11"
PROTOCOL = "2025-11-25"

# The caller: a support agent acting for alice (what Envoy's jwt_authn puts in metadata).
CLAIMS: dict[str, Any] = {
    "iss": "https://issuer.example.com", "sub": "alice", "aud": "mcp", "azp": "support-agent",
    "client_id": "support-agent", "sid": "user-session-7f3a", "groups": ["support", "employees"],
    "customer_ids": ["c-100", "c-101", "c-102", 42], "tenant": "t1",
    "iat": 1764000000, "exp": 4102444800, "scope": "mcp:tools mcp:resources",
}

# Ten tool families of 100 tools each. The policy (bench/policy.yaml) allows every family except
# admin_* to the support group through a glob, so a lookup walks exact rules, then globs in order.
DOMAINS = ("crm", "billing", "orders", "inventory", "tickets", "analytics", "docs", "hr", "marketing", "admin")
VERBS = ("get", "list", "search", "create", "update", "archive", "export", "sync", "count", "check")
NOUNS = ("customer", "invoice", "order", "item", "ticket", "report", "document", "employee", "campaign",
         "user", "account", "shipment", "payment", "note", "contact", "segment")
N_TOOLS = 1000

# --- schemas -------------------------------------------------------------------------------------


def _title(name: str) -> str:
    return " ".join(w.capitalize() for w in name.split("_"))


def _prop(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "title": _title(name)}


def _scalar(rng: random.Random, name: str) -> tuple[dict[str, Any], bool]:
    """(pydantic-style property schema, required?)"""
    kind = rng.choice(("str", "str", "int", "bool", "enum", "opt_str", "date", "float", "list_str"))
    if kind == "str":
        return _prop(name, {"type": "string", "minLength": 1, "maxLength": 256}), True
    if kind == "int":
        return _prop(name, {"type": "integer", "minimum": 0, "maximum": 10000, "default": 10}), False
    if kind == "bool":
        return _prop(name, {"type": "boolean", "default": False}), False
    if kind == "enum":
        return _prop(name, {"enum": ["asc", "desc"], "type": "string", "default": "asc"}), False
    if kind == "opt_str":
        return _prop(name, {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}), False
    if kind == "date":
        return _prop(name, {"type": "string", "format": "date-time"}), True
    if kind == "float":
        return _prop(name, {"type": "number", "exclusiveMinimum": 0}), True
    return _prop(name, {"type": "array", "items": {"type": "string"}, "maxItems": 50}), False


FIELD_NAMES = ("query", "limit", "offset", "status", "owner", "region", "since", "until", "sort", "tag",
               "priority", "channel", "locale", "reason", "comment", "amount", "label", "team")


def small_schema(rng: random.Random, title: str, id_field: str) -> dict[str, Any]:
    """A FastMCP/pydantic v2 `*Arguments` model with an id and 1-5 scalar fields."""
    props: dict[str, Any] = {id_field: _prop(id_field, {"type": "string"})}
    required = [id_field]
    for f in rng.sample(FIELD_NAMES, rng.randint(1, 5)):
        props[f], req = _scalar(rng, f)
        if req:
            required.append(f)
    return {"properties": props, "required": required, "title": title, "type": "object"}


def zod_schema(rng: random.Random, id_field: str) -> dict[str, Any]:
    """What the TypeScript SDK (zod-to-json-schema) publishes: draft-07, closed, no titles."""
    props: dict[str, Any] = {id_field: {"type": "string", "description": f"The {id_field}"}}
    for f in rng.sample(FIELD_NAMES, rng.randint(1, 4)):
        s, _ = _scalar(rng, f)
        s.pop("title", None)
        s.pop("default", None)
        props[f] = s
    return {"type": "object", "properties": props, "required": [id_field], "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#"}


def nested_defs(suffix: str) -> dict[str, Any]:
    """pydantic v2 $defs for an order-like model: enums, nested models, lists of models, optionals."""
    return {
        "Currency": {"enum": ["USD", "EUR", "GBP", "JPY"], "title": "Currency", "type": "string"},
        "Money": {"properties": {"amount": {"title": "Amount", "type": "number", "minimum": 0},
                                 "currency": {"$ref": "#/$defs/Currency"}},
                  "required": ["amount", "currency"], "title": "Money", "type": "object"},
        "Address": {"properties": {
            "line1": {"title": "Line1", "type": "string", "maxLength": 200},
            "line2": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}], "default": None,
                      "title": "Line2"},
            "city": {"title": "City", "type": "string"},
            "postal_code": {"title": "Postal Code", "type": "string", "pattern": "^[A-Za-z0-9 -]{3,10}$"},
            "country": {"title": "Country", "type": "string", "minLength": 2, "maxLength": 2}},
            "required": ["line1", "city", "postal_code", "country"], "title": "Address", "type": "object"},
        "LineItem": {"properties": {
            "sku": {"title": "Sku", "type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "quantity": {"title": "Quantity", "type": "integer", "minimum": 1, "maximum": 1000},
            "unit_price": {"$ref": "#/$defs/Money"},
            "attributes": {"additionalProperties": {"type": "string"}, "title": "Attributes", "type": "object",
                           "default": {}}},
            "required": ["sku", "quantity", "unit_price"], "title": "LineItem", "type": "object"},
        "Shipping": {"enum": ["ground", "air", "pickup"], "title": "Shipping", "type": "string"},
        f"Order{suffix}": {"properties": {
            "customer_id": {"title": "Customer Id", "type": "string"},
            "items": {"items": {"$ref": "#/$defs/LineItem"}, "minItems": 1, "maxItems": 100, "title": "Items",
                      "type": "array"},
            "ship_to": {"$ref": "#/$defs/Address"},
            "bill_to": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None},
            "shipping": {"$ref": "#/$defs/Shipping", "default": "ground"},
            "notes": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Notes"},
            "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array", "default": []}},
            "required": ["customer_id", "items", "ship_to"], "title": f"Order{suffix}", "type": "object"},
    }


def nested_schema(title: str, suffix: str) -> dict[str, Any]:
    return {"$defs": nested_defs(suffix),
            "properties": {"order": {"$ref": f"#/$defs/Order{suffix}"},
                           "dry_run": {"default": False, "title": "Dry Run", "type": "boolean"},
                           "idempotency_key": {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}],
                                               "default": None, "title": "Idempotency Key"}},
            "required": ["order"], "title": title, "type": "object"}


def records_schema(title: str) -> dict[str, Any]:
    return {"$defs": {
        "Record": {"properties": {
            "id": {"title": "Id", "type": "string"},
            "name": {"title": "Name", "type": "string", "maxLength": 200},
            "email": {"title": "Email", "type": "string", "format": "email"},
            "score": {"title": "Score", "type": "number"},
            "active": {"title": "Active", "type": "boolean"},
            "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array"},
            "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None}},
            "required": ["id", "name"], "title": "Record", "type": "object"},
        "Address": nested_defs("")["Address"]},
        "properties": {"dataset": {"title": "Dataset", "type": "string"},
                       "records": {"items": {"$ref": "#/$defs/Record"}, "title": "Records", "type": "array",
                                   "maxItems": 5000}},
        "required": ["dataset", "records"], "title": title, "type": "object"}


def text_schema(title: str) -> dict[str, Any]:
    return {"properties": {"filename": {"title": "Filename", "type": "string", "maxLength": 255},
                           "content": {"title": "Content", "type": "string", "maxLength": 131072},
                           "mime_type": {"default": "text/plain", "title": "Mime Type", "type": "string"}},
            "required": ["filename", "content"], "title": title, "type": "object"}


def make_tools(n: int = N_TOOLS, seed: int = 1729) -> list[dict[str, Any]]:
    """`n` tools: ~75% small pydantic models, ~10% zod/draft-07, ~12% nested order-like models with
    $defs, plus bulk-import tools (a list of nested records, and one big text field).

    Tool i is `{domain}_{verb}_{noun}_{i:03d}`; index 0 of each kind below is what the benches call.
    """
    rng = random.Random(seed)
    tools: list[dict[str, Any]] = []
    per = n // len(DOMAINS)
    for d, domain in enumerate(DOMAINS):
        for j in range(per):
            verb, noun = VERBS[j % len(VERBS)], NOUNS[(j * 7 + d) % len(NOUNS)]
            name = f"{domain}_{verb}_{noun}_{j:03d}"
            title = "".join(w.capitalize() for w in name.split("_")) + "Arguments"
            r = j % 50
            id_field = "customer_id" if domain in ("crm", "billing", "orders") else f"{noun}_id"
            if r < 6:
                schema = nested_schema(title, f"{d}{j}")
            elif r == 6:
                schema = records_schema(title)
            elif r == 7:
                schema = text_schema(title)
            elif r < 13:
                schema = zod_schema(rng, id_field)
            else:
                schema = small_schema(rng, title, id_field)
            tools.append({"name": name, "title": _title(name),
                          "description": f"{verb.capitalize()} {noun} records in the {domain} system. "
                                         f"Returns JSON. Requires the {domain} scope.",
                          "inputSchema": schema,
                          "annotations": {"readOnlyHint": verb in ("get", "list", "search", "count", "check")}})
    return tools


def write_pinned_policy(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    """bench/policy.yaml with the generated spec pinned: `tmp`/spec.json holds make_tools() and
    `tmp`/policy.yaml is the policy with `specFile: spec.json`. Returns (policy path, the tools)."""
    tools = make_tools()
    (tmp / "spec.json").write_bytes(orjson.dumps({"tools": tools}))
    doc = yaml.safe_load(POLICY.read_text())
    doc["servers"][0]["specFile"] = "spec.json"
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return policy, tools


def tools_by_shape(tools: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Index the generated tools by shape (for picking what to call)."""
    out: dict[str, list[dict[str, Any]]] = {"small": [], "nested": [], "records": [], "text": [], "zod": []}
    for t in tools:
        s = t["inputSchema"]
        if "$schema" in s:
            out["zod"].append(t)
        elif "$defs" in s and "records" in s["properties"]:
            out["records"].append(t)
        elif "$defs" in s:
            out["nested"].append(t)
        elif "content" in s["properties"]:
            out["text"].append(t)
        else:
            out["small"].append(t)
    return out


# --- arguments that satisfy those schemas --------------------------------------------------------


def small_args(tool: dict[str, Any]) -> dict[str, Any]:
    """Only the required arguments, each a minimal valid value (plus the id)."""
    s = tool["inputSchema"]
    out: dict[str, Any] = {}
    for name in s["required"]:
        p = s["properties"][name]
        t = p.get("type")
        if name.endswith("_id"):
            out[name] = "c-100"
        elif t == "string":
            out[name] = "2025-11-25T10:00:00Z" if p.get("format") == "date-time" else "alpha"
        elif t == "number":
            out[name] = 12.5
        else:
            raise AssertionError(f"unexpected required property {name}: {p}")
    return out


def _address(i: int) -> dict[str, Any]:
    return {"line1": f"{100 + i} Main Street", "line2": None, "city": "Springfield", "postal_code": "12345",
            "country": "US"}


def nested_args(items: int = 3) -> dict[str, Any]:
    return {"order": {
        "customer_id": "c-100",
        "items": [{"sku": f"ABC-{1000 + i}", "quantity": 1 + i,
                   "unit_price": {"amount": 19.99 + i, "currency": "EUR"},
                   "attributes": {"color": "blue", "size": "M"}} for i in range(items)],
        "ship_to": _address(1), "bill_to": _address(2), "shipping": "air", "notes": "leave at the door",
        "tags": ["priority", "gift"]},
        "dry_run": False, "idempotency_key": "9c1d5b7e2f0a"}


def records_args(target_bytes: int = 64 * 1024) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    args = {"dataset": "customers-2025-q4", "records": records}
    i = 0
    while len(orjson.dumps(args)) < target_bytes:
        records.append({"id": f"r-{i:05d}", "name": f"Customer number {i}", "email": f"user{i}@example.com",
                        "score": i * 0.5, "active": i % 3 != 0, "tags": ["vip", "eu"] if i % 2 else [],
                        "address": _address(i) if i % 2 else None})
        i += 1
    return args


def text_args(target_bytes: int = 64 * 1024) -> dict[str, Any]:
    line = "The quick brown fox jumps over the lazy dog. Lorem ipsum dolor sit amet.\n"
    content = (line * (target_bytes // len(line) + 1))[: target_bytes - 80]
    return {"filename": "notes.txt", "content": content}


def rpc(method: str, params: dict[str, Any] | None = None, mid: int = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": mid, "method": method}
    if params is not None:
        msg["params"] = params
    return orjson.dumps(msg)


def call_body(name: str, arguments: dict[str, Any], mid: int = 1) -> bytes:
    return rpc("tools/call", {"name": name, "arguments": arguments,
                              "_meta": {"progressToken": mid}}, mid)


def headers(body: bytes) -> dict[str, str]:
    """Lowercased request headers as Envoy puts them in a CheckRequest (pseudo-headers included)."""
    return {":authority": AUTHORITY, ":method": "POST", ":path": PATH, ":scheme": "http",
            "content-type": "application/json", "accept": "application/json, text/event-stream",
            "content-length": str(len(body)), "mcp-protocol-version": PROTOCOL, "mcp-session-id": SESSION_ID,
            "user-agent": "python-httpx/0.28.1", "x-forwarded-proto": "http",
            "x-request-id": "0d6f1c2a-5c1e-4d7b-9f8e-2b3a4c5d6e7f", "x-envoy-expected-rq-timeout-ms": "15000"}


def check_request(body: bytes, claims: dict[str, Any] = CLAIMS) -> Any:
    """A CheckRequest as Envoy 1.40 sends it with `with_request_body` + `pack_as_bytes` and
    `metadata_context_namespaces: [envoy.filters.http.jwt_authn]`."""
    from envoy.service.auth.v3 import external_auth_pb2
    from google.protobuf import struct_pb2

    req = external_auth_pb2.CheckRequest()
    a = req.attributes
    a.source.address.socket_address.address = "127.0.0.1"
    a.source.address.socket_address.port_value = 53412
    a.destination.address.socket_address.address = "127.0.0.1"
    a.destination.address.socket_address.port_value = 10000
    h = a.request.http
    h.id = "12345678901234567890"
    h.method, h.path, h.host, h.scheme, h.protocol = "POST", PATH, AUTHORITY, "http", "HTTP/1.1"
    for k, v in headers(body).items():
        h.headers[k] = v
    h.size = len(body)
    h.raw_body = body
    a.request.time.GetCurrentTime()
    s = struct_pb2.Struct()
    s.update({"jwt_payload": claims})
    a.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].CopyFrom(s)
    return req


# --- helpers -------------------------------------------------------------------------------------


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[k])


def table(headers_: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers_]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers_))]
    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def revision() -> str:
    """The git commit measured, with +dirty when the work tree differs (benches measure the tree)."""
    import subprocess
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "extauthz"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"

