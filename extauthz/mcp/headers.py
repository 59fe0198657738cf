"""2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) must say what the body says.

A proxy or server that routes on a header while we decide on the body would let a caller smuggle
a second name, so any disagreement is a `header_mismatch`. The encoding (`=?base64?...?=` for
values that don't survive as a plain header) follows the MCP transport spec; it is a few lines,
written here rather than imported from the SDK's private module.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Protocol

from extauthz.mcp.jsonrpc import Message
from extauthz.mcp.kinds import Kind
from extauthz.mcp.methods import MODERN_VERSIONS

SESSION_HEADER = "mcp-session-id"
MAX_SESSION_ID_CHARS = 1024             # longer session ids are not ours to learn or end
SESSION_ID = re.compile(r"[\x21-\x7e]+")   # MCP: visible ASCII only

_SENTINEL = re.compile(r"^=\?base64\?(.*)\?=$", re.DOTALL)
_CANONICAL_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
# Methods whose Mcp-Name header carries the capability they name -> the params member naming it.
NAME_BEARING = {k.call_method: k.key_field for k in (Kind.TOOLS, Kind.PROMPTS, Kind.RESOURCES)}
PROTOCOL_META = "io.modelcontextprotocol/protocolVersion"
PARAM_PREFIX = "mcp-param-"


def decode_value(value: str | None) -> str | None:
    """The header's real value, or None for a malformed sentinel (which then never matches)."""
    if value is None:
        return None
    m = _SENTINEL.fullmatch(value)
    if m is None:
        return value
    try:
        raw = base64.b64decode(m.group(1), validate=True)
        if base64.b64encode(raw).decode() != m.group(1):
            return None
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _body_version(m: Message) -> Any:
    meta = m.params.get("_meta")
    return meta.get(PROTOCOL_META) if type(meta) is dict else None


def routing_mismatch(headers: dict[str, str], m: Message) -> str | None:
    """Why the routing headers disagree with this message, or None."""
    h_method, h_name = headers.get("mcp-method"), headers.get("mcp-name")
    h_version = headers.get("mcp-protocol-version")
    body_version = _body_version(m)
    modern = body_version in MODERN_VERSIONS or h_version in MODERN_VERSIONS
    if m.kind == "response":
        return "routing headers on a response" if (h_method or h_name) else None
    if modern and body_version is not None and h_version != body_version:
        return "mcp-protocol-version header disagrees with the body's _meta protocolVersion"
    if modern or h_method is not None:
        if h_method != m.method:
            return "mcp-method header disagrees with the body's method"
    key = NAME_BEARING.get(m.method)
    if key is None:
        return "mcp-name header on a method that names nothing" if h_name is not None else None
    body_name = m.params.get(key)
    if modern or h_name is not None:
        if h_name is None and body_name is None:
            return None
        if decode_value(h_name) != body_name:
            return f"mcp-name header disagrees with the body's {key}"
    return None


_PARAM_MARK = "\n" + PARAM_PREFIX       # header names hold no newline: found only at a name's start
_header_maps: dict[str, dict[tuple[str, ...], tuple[str, Any]]] = {}


def _annotated(schema: Any) -> dict[tuple[str, ...], tuple[str, Any]]:
    """property path -> (x-mcp-header token lowercased, declared type), reached via `properties` only."""
    out: dict[tuple[str, ...], tuple[str, Any]] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict) or len(path) > 16:
            continue
        token = node.get("x-mcp-header")
        if path and isinstance(token, str):
            out[path] = (token.lower(), node.get("type"))
        props = node.get("properties")
        if isinstance(props, dict):
            for k, sub in props.items():
                stack.append(((*path, k), sub))
    return out


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


class Tool(Protocol):
    """What the header check reads of a learned tool (extauthz.specs.model.ToolSpec)."""

    @property
    def input_schema(self) -> dict[str, Any]: ...
    @property
    def schema_hash(self) -> str: ...


def param_mismatch(headers: dict[str, str], tool: Tool, args: dict[str, Any]) -> str | None:
    """`Mcp-Param-*` headers must match the arguments the schema marks with `x-mcp-header`, and
    no other `Mcp-Param-*` header may appear. Only 2026-07-28 clients must send them; an older
    client that sends none is fine, one that sends some is held to them."""
    modern = headers.get("mcp-protocol-version") in MODERN_VERSIONS
    amap = _header_maps.get(tool.schema_hash)
    if amap is None:
        amap = _annotated(tool.input_schema)
        if len(_header_maps) > 10000:
            _header_maps.clear()
        _header_maps[tool.schema_hash] = amap
    # (decided in C for the common request with no Mcp-Param-* header: a str.startswith per header
    # is ~40 ns, a Check carries a dozen or more headers)
    any_param = _PARAM_MARK in "\n" + "\n".join(headers)
    if not amap:
        if any_param:
            for k in headers:
                if k.startswith(PARAM_PREFIX):
                    return f"undeclared header {k}"
        return None
    present = {k[len(PARAM_PREFIX):]: v for k, v in headers.items() if k.startswith(PARAM_PREFIX)} \
        if any_param else {}
    declared = {tok for tok, _ in amap.values()}
    for tok in present:
        if tok not in declared:
            return f"undeclared header mcp-param-{tok}"
    for path, (tok, typ) in amap.items():
        node: Any = args
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
        raw = present.get(tok)
        rendered = _render(node) if node is not None else None
        if rendered is None:
            if raw is not None:
                return f"mcp-param-{tok} header without a matching argument"
            continue
        if raw is None:
            if not modern:
                continue
            return f"mcp-param-{tok} header missing for argument {'.'.join(path)}"
        decoded = decode_value(raw)
        if decoded is None:
            return f"mcp-param-{tok} header is malformed"
        if decoded != rendered and not (typ == "integer" and _same_integer(decoded, node)):
            return f"mcp-param-{tok} header disagrees with argument {'.'.join(path)}"
    return None


def _same_integer(decoded: str, value: Any) -> bool:
    if isinstance(value, bool) or not _CANONICAL_DECIMAL.fullmatch(decoded):
        return False
    whole, _, frac = decoded.partition(".")
    if frac and set(frac) != {"0"}:
        return False
    try:
        return isinstance(value, (int, float)) and int(whole) == value
    except ValueError:
        return False
