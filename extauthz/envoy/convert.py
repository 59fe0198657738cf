"""Pure conversions at the edge: CheckRequest -> HttpRequest, Decision -> CheckResponse.

Nothing past this module sees a protobuf type.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from extauthz.core.answers import denial_body
from extauthz.core.decision import Decision
from extauthz.mcp.learnheader import LEARN_HEADER, OBSERVE_HEADER, encode_learn_header, end_mark, stream_mark
from extauthz.mcp.request import HttpRequest

PARTIAL_HEADER = "x-envoy-auth-partial-body"
REASON_HEADER = "x-mcp-extauthz-reason"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK = status_pb2.Status(code=0)
_DENIED = status_pb2.Status(code=7)
_UNAUTH = status_pb2.Status(code=16)
_JSON = "application/json"


def struct_to_python(value: Any) -> Any:
    """Struct/ListValue/Value -> plain Python. Integral numbers become ints: JSON has no int/float
    distinction, and claims like `customer_ids: [42]` must compare with the integer 42."""
    if isinstance(value, struct_pb2.Struct):
        return {k: struct_to_python(v) for k, v in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [struct_to_python(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


_metadata_cache: dict[bytes, Any] = {}
_METADATA_CACHE_MAX = 4096


def _metadata_value(struct: struct_pb2.Struct) -> Any:
    """Converted metadata, cached by its serialized bytes: a caller's verified claims are the same
    Struct on every request, and serializing (C) is ~20x cheaper than converting (Python). The
    cached dicts are shared: nothing downstream mutates them."""
    key = struct.SerializeToString(deterministic=True)
    hit = _metadata_cache.get(key)
    if hit is None:
        if len(_metadata_cache) >= _METADATA_CACHE_MAX:
            _metadata_cache.clear()
        hit = _metadata_cache[key] = struct_to_python(struct)
    return hit


def metadata_dict(metadata: base_pb2.Metadata) -> dict[str, Any]:
    """`filter_metadata` namespaces as plain data (cached per Struct, like the Check's)."""
    fm = metadata.filter_metadata
    return {ns: _metadata_value(fm[ns]) for ns in fm}


def to_http_request(req: external_auth_pb2.CheckRequest) -> HttpRequest:
    attrs = req.attributes
    http = attrs.request.http
    headers = dict(http.headers)
    if not headers and http.header_map.headers:
        for h in http.header_map.headers:
            v = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
            headers[h.key] = f"{headers[h.key]},{v}" if h.key in headers else v
    body = http.raw_body if http.raw_body else http.body.encode("utf-8", "surrogatepass")
    metadata: dict[str, Any] = {}
    fm = attrs.metadata_context.filter_metadata
    for ns in fm:
        metadata[ns] = _metadata_value(fm[ns])
    path = http.path or headers.get(":path", "")
    return HttpRequest(
        method=http.method or headers.get(":method", ""),
        path=path,
        authority=http.host or headers.get(":authority", ""),
        headers=headers,
        body=body,
        partial=headers.get(PARTIAL_HEADER) == "true",
        peer_principal=attrs.source.principal,
        metadata=metadata,
    )


def _hvo(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _metadata(d: Decision) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    f = s.fields["mcp_extauthz"].struct_value.fields
    c = d.caller
    f["decision_id"].string_value = d.decision_id
    f["server"].string_value = d.server
    f["method"].string_value = d.method
    f["name"].string_value = d.name
    f["caller"].string_value = c.key if c else ""
    f["reason"].string_value = d.reason.value
    f["monitor"].bool_value = d.monitor and not d.allowed
    return s


def to_check_response(d: Decision) -> external_auth_pb2.CheckResponse:
    if d.wire_allowed:
        headers = [
            _hvo("x-mcp-server", d.server),
            _hvo("x-mcp-method", d.method or "-"),
            _hvo("x-mcp-caller", d.caller.key if d.caller else "-"),
            _hvo("x-mcp-decision-id", d.decision_id),
        ]
        remove = []
        if d.name:
            headers.append(_hvo("x-mcp-name", d.name.encode("unicode_escape").decode("ascii")[:1024]))
        else:
            remove.append("x-mcp-name")
        plan = d.plan
        if plan.observe_only:
            headers.append(_hvo(OBSERVE_HEADER, encode_learn_header(plan.entries)))
            remove.append(LEARN_HEADER)
        elif plan.learns:           # a resumed stream: a view, no entries
            headers.append(_hvo(LEARN_HEADER, stream_mark(plan.view) if plan.stream
                                else encode_learn_header(plan.entries, plan.view)))
            remove.append(OBSERVE_HEADER)
        elif plan.end_session:
            headers.append(_hvo(LEARN_HEADER, end_mark(d.session_id)))
            remove.append(OBSERVE_HEADER)
        else:
            remove += [LEARN_HEADER, OBSERVE_HEADER]
        return external_auth_pb2.CheckResponse(
            status=_OK,
            ok_response=external_auth_pb2.OkHttpResponse(headers=headers, headers_to_remove=remove),
            dynamic_metadata=_metadata(d),
        )
    headers = [
        _hvo("content-type", _JSON),
        _hvo(REASON_HEADER, d.reason.value),
        _hvo("x-mcp-decision-id", d.decision_id),
    ]
    if d.www_authenticate:
        headers.append(_hvo("www-authenticate", d.www_authenticate))
    return external_auth_pb2.CheckResponse(
        status=_UNAUTH if d.status == 401 else _DENIED,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=d.status), headers=headers, body=denial_body(d)),
        dynamic_metadata=_metadata(d),
    )
