"""Strict JSON-RPC parsing of an MCP request body.

One parse with orjson (which already rejects NaN/Infinity, invalid UTF-8, lone surrogates and
trailing garbage), then one iterative walk that enforces the size limits and counts object keys.
Duplicate keys are the one thing orjson forgives (last wins), and two parsers that read one body
differently are an attack surface, so we count key tokens in the raw text with a C-speed regex and
compare with the keys that survived: any difference means a duplicate, and the body is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from extauthz.core.reasons import Reason

# A JSON string token, optionally followed by the colon that makes it an object key. Matching
# strings whole (escapes included) means a colon inside a string can never be miscounted.
_STRING_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"(\s*:|)', re.DOTALL)
PARSE_ERROR = -32700        # JSON-RPC: the body is not JSON (every other refusal's code follows its reason)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits, read by attribute: the policy's compiled `limits` has the same fields and is
    passed as is; this class is the default for parsing outside a policy (tests, tools)."""

    max_body_bytes: int = 262144
    max_depth: int = 32
    max_string_bytes: int = 65536
    max_array_items: int = 10000


RequestId = str | int    # what `_message` accepts: JSON-RPC also allows null and fractions, MCP does not


@dataclass(slots=True)
class Message:
    """One JSON-RPC message. `kind` is request | notification | response."""

    kind: str
    id: RequestId | None
    method: str
    params: dict[str, Any]
    raw: dict[str, Any]


@dataclass(slots=True)
class ParsedBody:
    messages: list[Message]
    batch: bool
    error: Reason | None = None
    detail: str = ""
    ids: list[Any] | None = None    # ids that could still be read unambiguously on an error
    code: int | None = None         # PARSE_ERROR, or None: the error reason's own code


class BodyError(Exception):
    def __init__(self, reason: Reason, detail: str, value: Any = None, code: int | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.value, self.code = reason, detail, value, code


def _walk(value: Any, limits: Limits) -> int:
    """Enforce depth/string/array limits; return the number of object keys seen."""
    keys = 0
    max_depth, max_str, max_items = limits.max_depth, limits.max_string_bytes, limits.max_array_items
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        t = type(node)
        if t is dict:
            if depth > max_depth:
                raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"nesting deeper than {max_depth}")
            keys += len(node)
            for k, v in node.items():
                if len(k) > max_str // 4 and len(k.encode()) > max_str:
                    raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"a key longer than {max_str} bytes")
                if type(v) in (dict, list):
                    push((v, depth + 1))
                elif type(v) is str and len(v) > max_str // 4 and len(v.encode()) > max_str:
                    raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"a string longer than {max_str} bytes")
        elif t is list:
            if depth > max_depth:
                raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"nesting deeper than {max_depth}")
            if len(node) > max_items:
                raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"an array longer than {max_items} items")
            for v in node:
                if type(v) in (dict, list):
                    push((v, depth + 1))
                elif type(v) is str and len(v) > max_str // 4 and len(v.encode()) > max_str:
                    raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"a string longer than {max_str} bytes")
        elif t is str and len(node) > max_str // 4 and len(node.encode()) > max_str:
            raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"a string longer than {max_str} bytes")
    return keys


def _within_depth(value: Any, max_depth: int) -> bool:
    """No object or array nested deeper than max_depth (the root is depth 1), as _walk counts it;
    visits containers only."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            return False
        for v in (node.values() if type(node) is dict else node):
            t = type(v)
            if t is dict or t is list:
                push((v, depth + 1))
    return True


def _limits_cannot_bite(body: bytes, value: Any, limits: Limits) -> bool:
    """True when no string, key, array or nesting in this body can break a limit, decided mostly
    by counting in C: every string (escapes decode shorter, never longer) is shorter than the
    body, an array has at most commas+1 items, and nesting needs one bracket per level; only when
    there are more brackets than levels allowed are the containers walked for their depth."""
    # (a count is skipped where the body is too short to reach its limit: each is a C pass over it)
    n = len(body)
    if n > limits.max_string_bytes or (n > limits.max_array_items and body.count(b",") >= limits.max_array_items):
        return False
    if n <= limits.max_depth or body.count(b"[") + body.count(b"{") <= limits.max_depth:
        return True
    return _within_depth(value, limits.max_depth)


def _raw_key_count(body: bytes) -> int:
    # findall returns the colon group per string token ('' for values): counted in C.
    tokens = _STRING_TOKEN.findall(body)
    return len(tokens) - tokens.count(b"")


def loads_strict(body: bytes, limits: Limits) -> Any:
    """Parse JSON strictly or raise BodyError with the reason code DESIGN.md assigns."""
    if len(body) > limits.max_body_bytes:
        raise BodyError(Reason.PAYLOAD_TOO_LARGE, f"body larger than {limits.max_body_bytes} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BodyError(Reason.MALFORMED_REQUEST, f"invalid JSON: {e}", code=PARSE_ERROR) from None
    if type(value) not in (dict, list):
        _walk(value, limits)        # a lone string still has the string limit
        return value
    keys: int | None = None
    if not _limits_cannot_bite(body, value, limits):
        try:
            keys = _walk(value, limits)
        except BodyError as e:      # parsed fine, just too big: the ids can still be answered
            e.value = value
            raise
    # Duplicate keys: orjson keeps the last one silently. Re-serialised (C), a body without them
    # usually comes back byte for byte (SDK clients send compact JSON), and an identical text has
    # the same key tokens, none repeated. Otherwise count key tokens on both sides (re, C).
    dumped = orjson.dumps(value)
    if dumped == body:
        return value
    if keys is None:
        keys = _raw_key_count(dumped)
    if keys and _raw_key_count(body) != keys:
        raise BodyError(Reason.MALFORMED_REQUEST, "duplicate object keys")
    return value


def _message(obj: Any) -> Message:
    if type(obj) is not dict:
        raise BodyError(Reason.MALFORMED_REQUEST, "a JSON-RPC message must be an object")
    if obj.get("jsonrpc") != "2.0" or type(obj.get("jsonrpc")) is not str:
        raise BodyError(Reason.MALFORMED_REQUEST, 'jsonrpc must be "2.0"')
    has_id = "id" in obj
    mid = obj.get("id")
    if has_id and not (type(mid) is str or type(mid) is int):
        raise BodyError(Reason.MALFORMED_REQUEST, "id must be a string or an integer")
    if "method" in obj:
        method = obj["method"]
        if type(method) is not str:
            raise BodyError(Reason.MALFORMED_REQUEST, "method must be a string")
        if "result" in obj or "error" in obj:
            raise BodyError(Reason.MALFORMED_REQUEST, "a request cannot carry result or error")
        params = obj.get("params", {})
        if type(params) is not dict:
            raise BodyError(Reason.MALFORMED_REQUEST, "params must be an object")
        extra = obj.keys() - {"jsonrpc", "id", "method", "params"}
        if extra:
            raise BodyError(Reason.MALFORMED_REQUEST, f"unexpected member {sorted(extra)[0]!r}")
        return Message("request" if has_id else "notification", mid, method, params, obj)
    if has_id and (("result" in obj) != ("error" in obj)):
        extra = obj.keys() - {"jsonrpc", "id", "result", "error"}
        if extra:
            raise BodyError(Reason.MALFORMED_REQUEST, f"unexpected member {sorted(extra)[0]!r}")
        return Message("response", mid, "", {}, obj)
    raise BodyError(Reason.MALFORMED_REQUEST, "not a JSON-RPC request, notification or response")


def _readable_id(obj: Any) -> RequestId | None:
    if type(obj) is dict:
        mid = obj.get("id")
        if type(mid) is str or type(mid) is int:
            return mid
    return None


def parse_body(body: bytes, limits: Limits) -> ParsedBody:
    """Parse an MCP POST body into JSON-RPC messages; never raises."""
    try:
        value = loads_strict(body, limits)
    except BodyError as e:
        v = e.value
        if type(v) is list:
            return ParsedBody([], True, e.reason, e.detail, [_readable_id(x) for x in v][:limits.max_array_items])
        rid = _readable_id(v)
        return ParsedBody([], False, e.reason, e.detail, [rid] if rid is not None else None, e.code)
    if type(value) is list:
        if not value:
            return ParsedBody([], True, Reason.MALFORMED_REQUEST, "empty batch")
        ids = [_readable_id(v) for v in value]
        msgs = []
        for v in value:
            try:
                msgs.append(_message(v))
            except BodyError as e:
                return ParsedBody([], True, e.reason, e.detail, ids)
        return ParsedBody(msgs, True, ids=ids)
    try:
        return ParsedBody([_message(value)], False)
    except BodyError as e:
        rid = _readable_id(value)
        return ParsedBody([], False, e.reason, e.detail, [rid] if rid is not None else None)
