"""CheckResponse written straight to protobuf wire bytes.

Building a CheckResponse through the generated classes costs a dozen message objects per Check
(five header options, a Struct, statuses); the answer only ever has this fixed shape, so it is
encoded here with a few byte concatenations. `to_check_response` in convert.py stays the
reference: tests/unit/envoy/test_wire.py checks that both encode the same message for every kind
of decision. Hand-written because no maintained library encodes protobuf without the classes.
"""

from __future__ import annotations

from typing import Any, Literal

from extauthz.core.answers import denial_body
from extauthz.core.decision import NO_PLAN, Decision
from extauthz.envoy.convert import REASON_HEADER
from extauthz.mcp.learnheader import LEARN_HEADER, OBSERVE_HEADER, encode_learn_header, end_mark, stream_mark

_OVERWRITE = 2          # HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# Nearly every length in a CheckResponse is below 2 KiB: those varints are looked up, not built.
_VARINTS = [_encode_varint(i) for i in range(2048)]


def _varint(n: int) -> bytes:
    return _VARINTS[n] if n < 2048 else _encode_varint(n)


def _len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, value: str) -> bytes:
    if not value:
        return b""
    b = value.encode()
    return _VARINTS[field << 3 | 2] + _varint(len(b)) + b


_KEY_PREFIX: dict[str, bytes] = {}


def _header(field: int, key: str, value: str) -> bytes:
    """HeaderValueOption{header: {key, value}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}."""
    k = _KEY_PREFIX.get(key)
    if k is None:
        k = _KEY_PREFIX[key] = _str(1, key)
    hv = k + _str(2, value)
    hvo = b"\x0a" + _varint(len(hv)) + hv + b"\x18\x02"
    return _varint(field << 3 | 2) + _varint(len(hvo)) + hvo


def _value_str(value: str) -> bytes:
    return _str(3, value) if value else _len(3, b"")


_ENTRY_KEYS = {k: _str(1, k) for k in ("decision_id", "server", "method", "name", "caller", "reason", "monitor")}


def _entry(key: str, value: bytes) -> bytes:
    body = _ENTRY_KEYS[key] + b"\x12" + _varint(len(value)) + value
    return b"\x0a" + _varint(len(body)) + body


_memo: dict[tuple[str, str], bytes] = {}


def _memo_entry(key: str, value: str) -> bytes:
    """Encoded metadata entries and headers for values that repeat (server, method, reason, tool
    name, caller): built once. Bounded: cleared when full."""
    k = (key, value)
    hit = _memo.get(k)
    if hit is None:
        if len(_memo) >= 8192:
            _memo.clear()
        hit = _memo[k] = _entry(key, _value_str(value)) if not key.startswith("x-") else _header(2, key, value)
    return hit


def _metadata(d: Decision, decision_id: str) -> bytes:
    c = d.caller
    inner = (_entry("decision_id", _value_str(decision_id)) + _memo_entry("server", d.server)
             + _memo_entry("method", d.method) + _memo_entry("name", d.name)
             + _memo_entry("caller", c.key if c else "") + _memo_entry("reason", d.reason._value_)
             + _entry("monitor", b"\x20\x01" if d.monitor and not d.allowed else b"\x20\x00"))
    outer = _len(1, _str(1, "mcp_extauthz") + _len(2, _len(5, inner)))
    return _len(4, outer)


_STATUS_OK = _len(1, b"")                      # google.rpc.Status{code: 0}
_STATUS_DENIED = _len(1, b"\x08\x07")          # PERMISSION_DENIED
_STATUS_UNAUTH = _len(1, b"\x08\x10")          # UNAUTHENTICATED
_CONTENT_TYPE = _header(2, "content-type", "application/json")
_REMOVE_LEARN = _str(5, LEARN_HEADER)
_REMOVE_OBSERVE = _str(5, OBSERVE_HEADER)
_REMOVE_BOTH = _REMOVE_LEARN + _REMOVE_OBSERVE


# An allowed answer with nothing to learn is the same bytes for every Check of one (server,
# method, name, caller) but for the decision id, which has a fixed length (new_decision_id): kept
# as a template with two slots for the id. Bounded: cleared when full.
_ID_LEN = 32
_SLOT = "\x01" * _ID_LEN
_templates: dict[tuple[Any, ...], tuple[bytes, bytes, bytes] | None] = {}


def _template(d: Decision) -> tuple[bytes, bytes, bytes] | None:
    parts = _encode(d, _SLOT).split(_SLOT.encode())
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def encode_check_response(d: Decision) -> bytes:
    if d.wire_allowed and d.plan is NO_PLAN and len(d.decision_id) == _ID_LEN:
        c = d.caller
        key = (d.server, d.method, d.name, c.key if c is not None else None, d.reason, d.monitor)
        t: tuple[bytes, bytes, bytes] | None | Literal[False] = _templates.get(key, False)
        if t is False:
            if len(_templates) >= 8192:
                _templates.clear()
            t = _templates[key] = _template(d)
        if t is not None:
            did = d.decision_id.encode()
            return t[0] + did + t[1] + did + t[2]
    return _encode(d, d.decision_id)


def _encode(d: Decision, decision_id: str) -> bytes:
    if d.wire_allowed:
        ok = (_memo_entry("x-mcp-server", d.server) + _memo_entry("x-mcp-method", d.method or "-")
              + _memo_entry("x-mcp-caller", d.caller.key if d.caller else "-")
              + _header(2, "x-mcp-decision-id", decision_id))
        remove = b""
        if d.name:
            ok += _memo_entry("x-mcp-name", d.name.encode("unicode_escape").decode("ascii")[:1024])
        else:
            remove += _str(5, "x-mcp-name")
        plan = d.plan
        if plan.observe_only:
            ok += _header(2, OBSERVE_HEADER, encode_learn_header(plan.entries))
            remove += _REMOVE_LEARN
        elif plan.learns:           # a resumed stream: a view, no entries
            ok += _header(2, LEARN_HEADER, stream_mark(plan.view) if plan.stream
                          else encode_learn_header(plan.entries, plan.view))
            remove += _REMOVE_OBSERVE
        elif plan.end_session:
            ok += _header(2, LEARN_HEADER, end_mark(d.session_id))
            remove += _REMOVE_OBSERVE
        else:
            remove += _REMOVE_BOTH
        return _STATUS_OK + _len(3, ok + remove) + _metadata(d, decision_id)
    headers = _CONTENT_TYPE + _header(2, REASON_HEADER, d.reason._value_) + _header(2, "x-mcp-decision-id", decision_id)
    if d.www_authenticate:
        headers += _header(2, "www-authenticate", d.www_authenticate)
    denied = _len(1, b"\x08" + _varint(d.status)) + headers + _len(3, denial_body(d))
    return (_STATUS_UNAUTH if d.status == 401 else _STATUS_DENIED) + _len(2, denied) + _metadata(d, decision_id)
