"""The decision core: pure functions from plain request data to a Decision.

Pipeline (each phase may end it): parse -> identity -> session -> for every JSON-RPC message:
(1) is it part of the server's published spec, (2) may this caller use it with these values,
(3) do the arguments match the published schema. No gRPC types, no I/O.
"""

from __future__ import annotations

import gzip
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

from extauthz.core.decision import ALLOW, Decision, Verdict, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.identity.caller import Caller
from extauthz.identity.sources import BadIdentity, resolve_caller
from extauthz.mcp import headers as mcp_headers
from extauthz.mcp.jsonrpc import Limits, Message, parse_body
from extauthz.mcp.methods import (ALLOWED_PARAMS, BATCH_VERSIONS, CAPABILITY_METHODS, FREE_METHODS,
                                  LEARN_METHODS, NOTIFICATIONS)
from extauthz.mcp.names import name_problem, uri_problem
from extauthz.mcp.request import HttpRequest
from extauthz.sessions.registry import SessionRegistry, valid_session_id
from extauthz.sessions.visibility import Visibility, shown
from extauthz.specs.learn import MAX_ENTRIES
from extauthz.specs.store import SpecStore
from extauthz.specs.validators import Invalid, ValidatorCache

SESSION_HEADER = "mcp-session-id"


@dataclass(slots=True)
class Context:
    """Everything a decision reads. Swapped whole on a policy reload."""

    policy: Any                 # extauthz.policy.model.Policy
    specs: SpecStore
    sessions: SessionRegistry
    validators: ValidatorCache
    limits: Limits              # the policy's limits (same fields as extauthz.mcp.jsonrpc.Limits)
    visibility: Visibility | None = None   # what each session was listed (sessions.visibilityBinding)
    risk: Any = None            # extauthz.risk.engine.RiskEngine: per-caller score (risk.enabled)
    links: Any = None           # extauthz.sessions.links.LinkGrants: resource links returned to a session
    shared_claims: bool = False  # session owners live in a shared store (--redis, --workers)


def _deny(d: Decision, reason: Reason, detail: str, status: int) -> Decision:
    d.reason, d.detail, d.status = reason, detail, status
    return d


def decide(http: HttpRequest, ctx: Context) -> Decision:
    policy = ctx.policy
    d = Decision(new_decision_id(), Reason.ALLOWED, monitor=policy.monitor,
                 http_method=http.method)
    d.protocol_version = http.headers.get("mcp-protocol-version", "")
    deny_status = policy.defaults.deny_status

    server = policy.server_for(http.authority, http.path)
    d.server = server.name if server is not None else f"shadow:{http.authority}{http.path.split('?', 1)[0]}"
    if server is None and policy.defaults.unknown_server == "deny":
        _read_ids(http, d, ctx.limits)
        return _deny(d, Reason.UNKNOWN_SERVER, "no policy server matches this authority and path",
                     deny_status if d.form != "bare" else 403)

    # Parse first (a body that isn't JSON-RPC gets 400 whoever sent it).
    messages: list[Message] = []
    if http.method == "POST":
        if http.partial:
            return _deny(d, Reason.PARTIAL_BODY, "Envoy forwarded a truncated body", 400)
        ctype = http.headers.get("content-type", "")
        if ctype != "application/json" and ctype.split(";", 1)[0].strip().lower() != "application/json":
            return _deny(d, Reason.MALFORMED_REQUEST, "an MCP POST must be application/json", 400)
        body, problem = _decoded_body(http, policy, ctx.limits)
        if problem is not None:
            return _deny(d, problem[0], problem[1], 413 if problem[0] is Reason.PAYLOAD_TOO_LARGE else 400)
        parsed = parse_body(body, ctx.limits)
        if parsed.error is not None:
            _answer_shape(d, parsed)
            status = 400
            if parsed.error is Reason.PAYLOAD_TOO_LARGE:
                status = deny_status if d.ids else 413
            return _deny(d, parsed.error, parsed.detail, status)
        messages = parsed.messages
        _answer_shape(d, parsed)
        if parsed.batch:
            ids = [i for i in d.ids if i is not None]
            if len(ids) != len(set(ids)):
                return _deny(d, Reason.MALFORMED_REQUEST, "duplicate ids in a batch", 400)
        if (messages[0].kind == "response" if len(messages) == 1 else any(m.kind == "response" for m in messages)) \
                and not http.headers.get(SESSION_HEADER):
            return _deny(d, Reason.MALFORMED_REQUEST, "a JSON-RPC response outside an MCP session", deny_status)
        if parsed.batch and d.protocol_version and d.protocol_version not in BATCH_VERSIONS \
                and d.protocol_version != "2024-11-05":
            return _deny(d, Reason.MALFORMED_REQUEST, f"JSON-RPC batches are not part of {d.protocol_version}",
                         deny_status)
        if not parsed.batch:
            d.method = messages[0].method
    elif http.method in ("GET", "DELETE"):
        d.form, d.method = "bare", http.method
    else:
        d.form = "bare"
        return _deny(d, Reason.MALFORMED_REQUEST, f"HTTP {http.method} is not an MCP request", 400)

    # Identity.
    try:
        caller = resolve_caller(http, policy.identity)
    except BadIdentity as e:
        d.www_authenticate = 'Bearer realm="mcp", error="invalid_token"'
        return _deny(d, Reason.UNAUTHENTICATED, str(e), 401)
    d.caller = caller
    if caller is None and policy.defaults.unauthenticated == "deny":
        d.www_authenticate = 'Bearer realm="mcp"'
        return _deny(d, Reason.UNAUTHENTICATED, "no identity", 401)
    # (a blocked caller may still end its sessions: DELETE only releases state, and the session
    # binding below still stops it ending anybody else's)
    if caller is not None and ctx.risk is not None and http.method != "DELETE":
        if why := ctx.risk.blocked(caller.key):
            d.name = _requested_name(messages)
            return _deny(d, Reason.RISK_BLOCKED, why, _status(d, deny_status))
        if why := ctx.risk.limited(caller.key):
            d.name = _requested_name(messages)
            return _deny(d, Reason.RATE_LIMITED, why, _status(d, deny_status))

    # MCP session: a bearer secret bound to the caller who first used it. The 2024-11-05
    # HTTP+SSE transport carries it in the POST's query (`?session_id=`) instead of a header.
    sid = http.headers.get(SESSION_HEADER, "")
    if not sid and "?" in http.path:
        sid = _query_session(http.path)
        d.legacy_sse = bool(sid) and http.method == "POST"
    elif not sid and http.method == "GET":
        d.learn_stream = True           # a 2024-11-05 event stream: learn the results it carries
    if sid:
        if not valid_session_id(sid) or "," in sid:     # Envoy joins repeated headers with commas
            return _deny(d, Reason.MALFORMED_REQUEST, "malformed or repeated mcp-session-id", _status(d, deny_status))
        d.session_id = sid
        # Resuming a stream (streamable HTTP): the server replays what it sent on it, lists included.
        d.resumed = http.method == "GET" and bool(http.headers.get("last-event-id"))
        if policy.sessions.bind_to_caller:
            if caller is not None and ctx.shared_claims and ctx.sessions.owner(sid) is None \
                    and not ctx.sessions.ended(sid):
                # Never seen here: whoever holds it elsewhere owns it. Denied until the claim says.
                d.claim = sid
                return _deny(d, Reason.NOT_ALLOWED, "the session's owner is not confirmed", _status(d, deny_status))
            # (an anonymous request, where the policy lets them in, never rides a bound session)
            if not ctx.sessions.owner_ok(sid, caller.key if caller is not None else ""):
                return _deny(d, Reason.SESSION_HIJACK, "session belongs to another caller", _status(d, deny_status))
            if caller is not None and not ctx.sessions.has_room(sid):
                # never make room by dropping a live binding: that would free its id for anyone
                return _deny(d, Reason.RATE_LIMITED, "sessions.maxSessions live sessions are bound: no room for "
                             "another", _status(d, deny_status))
    if http.method != "POST":
        return d
    if server is None:
        return d          # shadow traffic, allowed by policy: parsed and logged, not enforced

    # 2026-07-28 routing headers must agree with the body (only one message per request there).
    if len(messages) == 1:
        mismatch = mcp_headers.routing_mismatch(http.headers, messages[0])
        if mismatch:
            return _deny(d, Reason.HEADER_MISMATCH, mismatch, _status(d, deny_status))
    elif any(h.startswith("mcp-method") or h.startswith("mcp-name") for h in http.headers):
        return _deny(d, Reason.HEADER_MISMATCH, "routing headers on a batch", _status(d, deny_status))

    seen = None
    if ctx.visibility is not None and policy.sessions.visibility_binding:
        seen = ctx.visibility.view(server.name, sid, caller.key if caller is not None else "")
    linked = ctx.links.view(server.name, sid, caller.key if caller is not None else "") \
        if ctx.links is not None else None
    first_denial: Verdict | None = None
    for m in messages:
        v = decide_message(m, server, caller, ctx, http.headers, seen, linked)
        d.verdicts.append(v)
        if v.allowed:
            if m.method in LEARN_METHODS and m.kind == "request":
                d.learn.append([m.id, m.method, "cursor" not in m.params])
        elif first_denial is None:
            first_denial = v
        if len(messages) == 1:
            d.name, d.rule = v.name, v.rule
            if policy.audit.log_arguments and m.method in ("tools/call", "prompts/get"):
                d.arguments = m.params.get("arguments")
    if first_denial is not None:
        d.learn = []
        return _deny(d, first_denial.reason, first_denial.detail, _status(d, deny_status))
    if len(d.learn) > MAX_ENTRIES:
        # More than the learn header carries: its lists could be neither learned nor filtered.
        n, d.learn = len(d.learn), []
        return _deny(d, Reason.PAYLOAD_TOO_LARGE, f"a batch may carry at most {MAX_ENTRIES} list, initialize "
                     f"and server/discover requests ({n} here)", _status(d, deny_status))
    return d


def _requested_name(messages: list[Message]) -> str:
    """The tool, prompt or resource URI a single request names, for the log line of a denial
    decided before the message itself is (risk_blocked, rate_limited)."""
    if len(messages) != 1:
        return ""
    cap = CAPABILITY_METHODS.get(messages[0].method)
    value = messages[0].params.get(cap[1]) if cap is not None else None
    return value[:200] if type(value) is str else ""


def _query_session(path: str) -> str:
    values = urllib.parse.parse_qs(path.split("?", 1)[1], keep_blank_values=True).get("session_id", [])
    if len(values) > 1:
        return ",".join(values)         # repeated: refused below like a repeated header
    return values[0] if values else ""


def _status(d: Decision, deny_status: int) -> int:
    return 403 if d.form == "bare" else deny_status


def _read_ids(http: HttpRequest, d: Decision, limits: Limits) -> None:
    """Best effort: which ids to answer when denying before the real parse."""
    if http.method != "POST" or http.partial or len(http.body) > limits.max_body_bytes:
        d.form = "bare"
        return
    parsed = parse_body(http.body, limits)
    _answer_shape(d, parsed)
    if parsed.messages and not parsed.batch:
        d.method = parsed.messages[0].method


def _answer_shape(d: Decision, parsed: Any) -> None:
    """How a denial answers this body: one error per batch element, one error with the request's
    id, or a bare error (notification, or no id that can be read unambiguously)."""
    if parsed.messages:
        d.form = "batch" if parsed.batch else ("single" if parsed.messages[0].kind == "request" else "bare")
        d.ids = [m.id for m in parsed.messages]
    elif parsed.ids:
        d.form, d.ids = ("batch" if parsed.batch else "single"), parsed.ids
    else:
        d.form, d.ids = "bare", []


def _decoded_body(http: HttpRequest, policy: Any, limits: Limits) -> tuple[bytes, tuple[Reason, str] | None]:
    enc = http.headers.get("content-encoding")
    if enc is None:
        return http.body, None
    enc = enc.strip().lower()
    if enc in ("", "identity"):
        return http.body, None
    if enc != "gzip" or "gzip" not in policy.limits.decode:
        return b"", (Reason.MALFORMED_REQUEST, f"content-encoding {enc!r} is not accepted")
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(http.body, limits.max_body_bytes + 1)
        if len(out) > limits.max_body_bytes or d.unconsumed_tail:
            return b"", (Reason.PAYLOAD_TOO_LARGE, "decoded body larger than maxBodyBytes")
        if not d.eof:
            return b"", (Reason.MALFORMED_REQUEST, "truncated gzip body")
        return out, None
    except (zlib.error, gzip.BadGzipFile) as e:
        return b"", (Reason.MALFORMED_REQUEST, f"bad gzip body: {e}")


def decide_message(m: Message, server: Any, caller: Caller | None, ctx: Context,
                   headers: dict[str, str], seen: Any = None, linked: Any = None) -> Verdict:
    """The three questions for one JSON-RPC message."""
    if m.kind == "response":
        return ALLOW              # the client answering a server request (sampling, elicitation)
    method = m.method
    if method in FREE_METHODS:
        return ALLOW
    if m.kind == "notification":
        return ALLOW if method in NOTIFICATIONS else Verdict(Reason.UNKNOWN_METHOD, f"unknown notification {method!r}")
    cap = CAPABILITY_METHODS.get(method)
    if cap is None:
        if method == "completion/complete":
            return _completion(m, server, caller, ctx, seen)
        if method == "subscriptions/listen":
            return _listen(m, server, caller, ctx, seen, linked)
        return Verdict(Reason.UNKNOWN_METHOD, f"unknown method {method[:100]!r}")
    allowed_params = ALLOWED_PARAMS[method]
    if not allowed_params.issuperset(m.params):
        extra = m.params.keys() - allowed_params
        return Verdict(Reason.SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    kind, key = cap
    if kind == "tools":
        return _tool_call(m, server, caller, ctx, headers, seen)
    if kind == "prompts":
        return _prompt_get(m, server, caller, ctx, seen)
    return _resource(m.params.get(key), server, caller, ctx, seen, linked)


def _permitted(rule: Any, caller: Caller | None) -> bool:
    return rule is not None and rule.allow.permits(caller)


def _quarantined(spec: Any, kind: str, name: str) -> Verdict | None:
    why = spec.quarantined.get((kind, name))
    # `why` is what held it (a change since approval, or the first-sight screen): say that, not a guess
    return Verdict(Reason.QUARANTINED, f"{kind[:-1]} {name!r} is quarantined: {why}", name=name) if why else None


def _unknown(ctx: Context, what: str, name: str) -> Verdict | None:
    if ctx.policy.defaults.unknown_capability == "deny":
        return Verdict(Reason.UNKNOWN_CAPABILITY, f"{what} {name[:200]!r} is not in the server's published spec",
                       name=name)
    return None


def _unseen(seen: Any, kind: str, key: str, what: str) -> Verdict | None:
    """sessions.visibilityBinding: the server publishes this, but never listed it to this session
    (or, without a session, to this caller). Compared with what the server listed, not with what
    filterLists showed, so a capability the policy forbids stays `not_allowed`."""
    if seen is not None and shown(seen, kind, key) is False:
        return Verdict(Reason.UNKNOWN_CAPABILITY, f"{what} {key[:200]!r} was never listed to this session", name=key)
    return None


def _named(name: Any, kind: str, server: Any, caller: Caller | None, ctx: Context,
           seen: Any = None) -> tuple[Verdict | None, Any, Any]:
    """Questions 1 and 2 for a tool or prompt named in the request: (denial or None, spec entry, rule).

    A clean name, listed by the server (unless the policy lets unknown capabilities through), not
    quarantined, and a rule that permits this caller."""
    if (problem := name_problem(name)) is not None:
        return Verdict(Reason.MALFORMED_REQUEST, problem), None, None
    spec = ctx.specs.get(server.name)
    entry = spec.table(kind).get(name) if spec is not None else None
    what = kind[:-1]
    if entry is None:
        if (v := _unknown(ctx, what, name)) is not None:
            return v, None, None
    elif (v := _quarantined(spec, kind, name)) is not None or (v := _unseen(seen, kind, name, what)) is not None:
        return v, None, None
    rule = server.rule_for(what, name)
    if not _permitted(rule, caller):
        return Verdict(Reason.NOT_ALLOWED, f"{what} {name!r} is not allowed for this caller",
                       rule.rule_id if rule else "", name), None, None
    return None, entry, rule


def _constraints(rule: Any, args: Any, caller: Caller | None, name: str) -> Verdict:
    for c in rule.constraints:
        if not c.check(args, caller):
            return Verdict(Reason.CONSTRAINT_VIOLATED, f"argument {c.argument} must be {c.op} {c.claim}",
                           rule.rule_id, name)
    return Verdict(Reason.ALLOWED, "", rule.rule_id, name)


def _tool_call(m: Message, server: Any, caller: Caller | None, ctx: Context, headers: dict[str, str],
               seen: Any = None) -> Verdict:
    name = m.params.get("name")
    denied, tool, rule = _named(name, "tools", server, caller, ctx, seen)
    if denied is not None:
        return denied
    args = m.params.get("arguments", {})
    if type(args) is not dict:
        return Verdict(Reason.SCHEMA_VIOLATION, "arguments must be an object", rule.rule_id, name)
    if tool is not None:
        strict = ctx.policy.strictness_of(server, rule) == "strict"
        compiled = ctx.validators.get(tool.input_schema, strict, tool.schema_hash)
        if isinstance(compiled, Invalid):
            return Verdict(Reason.SCHEMA_VIOLATION, compiled.reason, rule.rule_id, name)
        if not compiled.is_valid(args):
            return Verdict(Reason.SCHEMA_VIOLATION, compiled.first_error(args) or "invalid", rule.rule_id, name)
        if (mismatch := mcp_headers.param_mismatch(headers, tool, args)) is not None:
            return Verdict(Reason.HEADER_MISMATCH, mismatch, rule.rule_id, name)
    return _constraints(rule, args, caller, name)


def _prompt_get(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None) -> Verdict:
    name = m.params.get("name")
    denied, prompt, rule = _named(name, "prompts", server, caller, ctx, seen)
    if denied is not None:
        return denied
    args = m.params.get("arguments", {})
    if args is None:
        args = {}
    if type(args) is not dict or any(type(v) is not str for v in args.values()):
        return Verdict(Reason.SCHEMA_VIOLATION, "prompt arguments must be an object of strings", rule.rule_id, name)
    if prompt is not None:
        undeclared = args.keys() - prompt.arguments.keys()
        if undeclared:
            return Verdict(Reason.SCHEMA_VIOLATION, f"undeclared prompt argument {sorted(undeclared)[0][:100]!r}",
                           rule.rule_id, name)
        missing = [a for a, req in prompt.arguments.items() if req and a not in args]
        if missing:
            return Verdict(Reason.SCHEMA_VIOLATION, f"missing required prompt argument {missing[0]!r}",
                           rule.rule_id, name)
        lim = ctx.limits.max_string_bytes
        if any(len(v) > lim for v in args.values()):
            return Verdict(Reason.PAYLOAD_TOO_LARGE, "prompt argument too long", rule.rule_id, name)
    return _constraints(rule, args, caller, name)


def _resource(uri: Any, server: Any, caller: Caller | None, ctx: Context, seen: Any = None,
              linked: Any = None) -> Verdict:
    if (problem := uri_problem(uri)) is not None:
        return Verdict(Reason.MALFORMED_REQUEST, problem)
    spec = ctx.specs.get(server.name)
    template = None
    known = spec is not None and uri in spec.resources
    if spec is not None and not known:
        template = spec.template_for(uri)
        known = template is not None
    if not known:
        # A resource link a tool returned to this session (caller) need not be listed.
        if linked is None or not ctx.links.granted(linked, uri):
            if (v := _unknown(ctx, "resource", uri)) is not None:
                return v
    else:
        key, kind = (uri, "resources") if template is None else (template.uri_template, "resourceTemplates")
        if (v := _quarantined(spec, kind, key)) is not None:
            return v
        if (v := _unseen(seen, kind, key, "resource" if template is None else "resource template")) is not None:
            return v
    rule = server.rule_for("resource", uri)
    if rule is None and template is not None:
        rule = server.rule_for("resource", template.uri_template)
    if not _permitted(rule, caller):
        return Verdict(Reason.NOT_ALLOWED, f"resource {uri[:200]!r} is not allowed for this caller",
                       rule.rule_id if rule else "", uri)
    return Verdict(Reason.ALLOWED, "", rule.rule_id, uri)


def _listen(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None,
            linked: Any = None) -> Verdict:
    """2026-07-28 `subscriptions/listen`: the notification stream. Resource subscriptions in it
    replace `resources/subscribe`, so each URI must pass exactly what a subscribe would."""
    extra = m.params.keys() - ALLOWED_PARAMS["subscriptions/listen"]
    if extra:
        return Verdict(Reason.SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    wanted = m.params.get("notifications")
    if type(wanted) is not dict:
        return Verdict(Reason.SCHEMA_VIOLATION, "subscriptions/listen needs a notifications object")
    uris = wanted.get("resourceSubscriptions", [])
    if type(uris) is not list:
        return Verdict(Reason.SCHEMA_VIOLATION, "resourceSubscriptions must be a list of URIs")
    for uri in uris:
        v = _resource(uri, server, caller, ctx, seen, linked)
        if not v.allowed:
            return v
    return ALLOW


def _completion(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None) -> Verdict:
    extra = m.params.keys() - ALLOWED_PARAMS["completion/complete"]
    if extra:
        return Verdict(Reason.SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    ref, arg = m.params.get("ref"), m.params.get("argument")
    if type(ref) is not dict or type(arg) is not dict or type(arg.get("name")) is not str \
            or type(arg.get("value")) is not str:
        return Verdict(Reason.SCHEMA_VIOLATION, "completion needs ref and argument {name, value}")
    if ref.get("type") == "ref/prompt":
        # Completing a prompt argument happens before it has a value: the prompt must be known and
        # allowed and the argument declared; required arguments are not required yet.
        name = ref.get("name")
        denied, prompt, rule = _named(name, "prompts", server, caller, ctx, seen)
        if denied is not None:
            return denied
        if prompt is not None and arg["name"] not in prompt.arguments:
            return Verdict(Reason.SCHEMA_VIOLATION, "completion for an undeclared prompt argument", rule.rule_id, name)
        return Verdict(Reason.ALLOWED, "", rule.rule_id, name)
    if ref.get("type") == "ref/resource":
        uri = ref.get("uri")
        if (problem := uri_problem(uri)) is not None:
            return Verdict(Reason.MALFORMED_REQUEST, problem)
        spec = ctx.specs.get(server.name)
        if spec is None or uri not in spec.templates:
            if (v := _unknown(ctx, "resource template", uri)) is not None:
                return v
        elif (v := _unseen(seen, "resourceTemplates", uri, "resource template")) is not None:
            return v
        rule = server.rule_for("resource", uri)
        if not _permitted(rule, caller):
            return Verdict(Reason.NOT_ALLOWED, "resource template not allowed for this caller",
                           rule.rule_id if rule else "", uri)
        return Verdict(Reason.ALLOWED, "", rule.rule_id, uri)
    return Verdict(Reason.SCHEMA_VIOLATION, "unknown completion ref type")
