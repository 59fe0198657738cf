"""The decision core: a pure pipeline from plain request data to one Decision.

Phases, in order, each returning its part or a `Denial` that ends the pipeline:
  route      which policy server (or shadow traffic)
  parse      the JSON-RPC messages, and the answer's shape (form, ids) a denial needs
  identify   the caller
  gate       a caller the risk engine blocks or rate-limits
  session    the MCP session and its binding to the caller
  arguments  the three questions for every message (extauthz.core.questions)
Every exit builds the Decision in one place (`_decision`). What happens after it (session
bookkeeping, risk, sampling, the answer plan) is planned in extauthz.core.plan. No gRPC, no I/O.
"""

from __future__ import annotations

import gzip
import logging
import urllib.parse
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from extauthz.core.context import Context
from extauthz.core.decision import NO_PLAN, Decision, Learn, Verdict, new, new_decision_id
from extauthz.core.questions import decide_message
from extauthz.core.reasons import (
    ALLOWED,
    HEADER_MISMATCH,
    MALFORMED_REQUEST,
    NOT_ALLOWED,
    PARTIAL_BODY,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    RISK_BLOCKED,
    SESSION_HIJACK,
    UNAUTHENTICATED,
    UNKNOWN_SERVER,
    Reason,
)
from extauthz.identity.caller import Caller
from extauthz.identity.sources import BadIdentity, resolve_caller
from extauthz.mcp import headers as mcp_headers
from extauthz.mcp.headers import SESSION_HEADER
from extauthz.mcp.jsonrpc import Limits, Message, ParsedBody, parse_body
from extauthz.mcp.kinds import BY_CAPABILITY_METHOD
from extauthz.mcp.learnheader import MAX_ENTRIES
from extauthz.mcp.methods import BATCH_VERSIONS, LEARN_METHODS
from extauthz.mcp.request import HttpRequest
from extauthz.policy.model import Identity, Policy, ServerPolicy
from extauthz.sessions.links import LinkView
from extauthz.sessions.registry import valid_session_id
from extauthz.sessions.visibility import SeenView

__all__ = ["Context", "Denial", "attributed_caller", "decide", "decide_message"]
log = logging.getLogger("extauthz")


class Denial(NamedTuple):
    """The verdict that ends the pipeline."""

    reason: Reason
    detail: str
    status: int                     # HTTP status on the wire
    name: str = ""                  # what the request named, when known before its message is decided
    www_authenticate: str = ""
    code: int | None = None         # a JSON-RPC code other than the reason's (a parse error)


class Shape(NamedTuple):
    """How a denial answers this body: one error per batch element, one error with the request's
    id, or a bare error (notification, or no id that can be read unambiguously)."""

    form: str
    ids: Sequence[Any]
    method: str = ""                # the single message's method


class Session(NamedTuple):
    sid: str = ""
    legacy_sse: bool = False        # a 2024-11-05 POST: session in the query, result on the stream
    learn_stream: bool = False      # a 2024-11-05 GET event stream: learn the results it carries
    resumed: bool = False           # a GET resuming a stream: the server replays what it sent
    claim: str = ""                 # a session id whose owner the shared store must confirm


class Checked(NamedTuple):
    verdicts: Sequence[Verdict]
    learn: tuple[Learn, ...]
    name: str
    rule: str
    arguments: Any


NOT_PARSED = Shape("single", ())
BARE = Shape("bare", ())
NO_SESSION = Session()
STREAM = Session(learn_stream=True)
_UNCHECKED = Checked((), (), "", "", None)


def decide(http: HttpRequest, ctx: Context) -> Decision:
    policy = ctx.policy
    deny_status = policy.defaults.deny_status
    server = policy.server_for(http.authority, http.path)
    label = server.name if server is not None else f"shadow:{http.authority}{http.path.split('?', 1)[0]}"

    if server is None and policy.defaults.unknown_server == "deny":
        shape = _read_shape(http, ctx.limits)
        return _decision(http, ctx, label, shape, _attributed(http, ctx), NO_SESSION, _UNCHECKED, Denial(
            UNKNOWN_SERVER, "no policy server matches this authority and path",
            deny_status if shape.form != "bare" else 403))

    # Parse first (a body that isn't JSON-RPC gets 400 whoever sent it).
    shape, messages = _parse(http, ctx, deny_status)
    if isinstance(messages, Denial):
        return _decision(http, ctx, label, shape, _attributed(http, ctx), NO_SESSION, _UNCHECKED, messages)

    who = _identify(http, policy)
    if isinstance(who, Denial):
        return _decision(http, ctx, label, shape, None, NO_SESSION, _UNCHECKED, who)

    if (denied := _gate(http, ctx, who, messages, shape, deny_status)) is not None:
        return _decision(http, ctx, label, shape, who, NO_SESSION, _UNCHECKED, denied)

    session, denied = _session(http, ctx, who, shape, deny_status)
    if denied is not None or http.method != "POST" or server is None:
        # (shadow traffic, allowed by policy: parsed and logged, not enforced)
        return _decision(http, ctx, label, shape, who, session, _UNCHECKED, denied)

    checked, denied = _arguments(http, ctx, server, who, session.sid, messages, shape, deny_status)
    return _decision(http, ctx, label, shape, who, session, checked, denied)


def _decision(http: HttpRequest, ctx: Context, server: str, shape: Shape, caller: Caller | None, session: Session,
              checked: Checked, denied: Denial | None) -> Decision:
    """The one place a Decision is built (positionally, in C: see extauthz.core.decision)."""
    form, ids, method = shape
    sid, legacy_sse, learn_stream, resumed, claim = session
    verdicts, learn, name, rule, arguments = checked
    monitor = ctx.policy.monitor
    version = http.headers.get("mcp-protocol-version", "")
    if denied is None:
        return Decision(new_decision_id(), ALLOWED, "", 200, rule, "", None, monitor,
                        server, method, name, caller, sid, http.method, version, arguments,
                        form, ids, verdicts, learn, learn_stream, resumed, legacy_sse, claim, (), NO_PLAN, None, 0.0)
    reason, detail, status, denied_name, www_authenticate, code = denied
    return Decision(new_decision_id(), reason, detail, status, rule, www_authenticate, code, monitor,
                    server, method, name or denied_name, caller, sid, http.method, version, arguments,
                    form, ids, verdicts, (), learn_stream, resumed, legacy_sse, claim, (), NO_PLAN, None, 0.0)


def _status(shape: Shape, deny_status: int) -> int:
    return 403 if shape.form == "bare" else deny_status


# -- parse ------------------------------------------------------------------------------------------
def _parse(http: HttpRequest, ctx: Context, deny_status: int) -> tuple[Shape, list[Message] | Denial]:
    if http.method in ("GET", "DELETE"):
        return Shape("bare", (), http.method), []
    if http.method != "POST":
        return BARE, Denial(MALFORMED_REQUEST, f"HTTP {http.method} is not an MCP request", 400)
    if http.partial:
        return NOT_PARSED, Denial(PARTIAL_BODY, "Envoy forwarded a truncated body", 400)
    ctype = http.headers.get("content-type", "")
    if ctype != "application/json" and ctype.split(";", 1)[0].strip().lower() != "application/json":
        return NOT_PARSED, Denial(MALFORMED_REQUEST, "an MCP POST must be application/json", 400)
    body, problem = _decoded_body(http, ctx.policy, ctx.limits)
    if problem is not None:
        return NOT_PARSED, Denial(problem[0], problem[1], 413 if problem[0] is PAYLOAD_TOO_LARGE else 400)
    parsed = parse_body(body, ctx.limits)
    shape = _shape(parsed)
    if parsed.error is not None:
        status = 400
        if parsed.error is PAYLOAD_TOO_LARGE:
            status = deny_status if shape.ids else 413
        return shape, Denial(parsed.error, parsed.detail, status, code=parsed.code)
    messages = parsed.messages
    if parsed.batch:
        ids = [i for i in shape.ids if i is not None]
        if len(ids) != len(set(ids)):
            return shape, Denial(MALFORMED_REQUEST, "duplicate ids in a batch", 400)
    if (messages[0].kind == "response" if len(messages) == 1 else any(m.kind == "response" for m in messages)) \
            and not http.headers.get(SESSION_HEADER):
        return shape, Denial(MALFORMED_REQUEST, "a JSON-RPC response outside an MCP session", deny_status)
    version = http.headers.get("mcp-protocol-version", "")
    if parsed.batch and version and version not in BATCH_VERSIONS and version != "2024-11-05":
        return shape, Denial(MALFORMED_REQUEST, f"JSON-RPC batches are not part of {version}", deny_status)
    return shape, messages


def _shape(parsed: ParsedBody) -> Shape:
    if parsed.messages:
        first = parsed.messages[0]
        if parsed.batch:
            return Shape("batch", [m.id for m in parsed.messages])
        return new(Shape, ("single" if first.kind == "request" else "bare", [first.id], first.method))
    if parsed.ids:
        return Shape("batch" if parsed.batch else "single", parsed.ids)
    return BARE


def _read_shape(http: HttpRequest, limits: Limits) -> Shape:
    """Best effort: which ids to answer when denying before the real parse."""
    if http.method != "POST" or http.partial or len(http.body) > limits.max_body_bytes:
        return BARE
    return _shape(parse_body(http.body, limits))


# -- identify, gate ---------------------------------------------------------------------------------
def _identify(http: HttpRequest, policy: Policy) -> Caller | None | Denial:
    try:
        caller = resolve_caller(http, policy.identity)
    except BadIdentity as e:
        return Denial(UNAUTHENTICATED, str(e), 401, www_authenticate='Bearer realm="mcp", error="invalid_token"')
    if caller is None and policy.defaults.unauthenticated == "deny":
        return Denial(UNAUTHENTICATED, "no identity", 401, www_authenticate='Bearer realm="mcp"')
    return caller


def _attributed(http: HttpRequest, ctx: Context) -> Caller | None:
    return attributed_caller(http, ctx.policy.identity)


def attributed_caller(http: HttpRequest, identity: Identity) -> Caller | None:
    """Who sent a request denied before identity was read (only to attribute the denial)."""
    try:
        return resolve_caller(http, identity)
    except BadIdentity:
        return None
    except Exception:  # noqa: BLE001 - attribution must never turn a decided Check into an error
        log.exception("could not attribute a denied request to a caller")
        return None


def _gate(http: HttpRequest, ctx: Context, caller: Caller | None, messages: list[Message], shape: Shape,
          deny_status: int) -> Denial | None:
    # (a blocked caller may still end its sessions: DELETE only releases state, and the session
    # binding still stops it ending anybody else's)
    if caller is None or ctx.risk is None or http.method == "DELETE":
        return None
    if why := ctx.risk.blocked(caller.key):
        return Denial(RISK_BLOCKED, why, _status(shape, deny_status), _requested_name(messages))
    if why := ctx.risk.limited(caller.key):
        return Denial(RATE_LIMITED, why, _status(shape, deny_status), _requested_name(messages))
    return None


# -- session ----------------------------------------------------------------------------------------
def _session(http: HttpRequest, ctx: Context, caller: Caller | None, shape: Shape,
             deny_status: int) -> tuple[Session, Denial | None]:
    """A bearer secret bound to the caller who first used it. The 2024-11-05 HTTP+SSE transport
    carries it in the POST's query (`?session_id=`) instead of a header."""
    sid = http.headers.get(SESSION_HEADER, "")
    legacy_sse = False
    if not sid and "?" in http.path:
        sid = _query_session(http.path)
        legacy_sse = bool(sid) and http.method == "POST"
    elif not sid:
        return (STREAM if http.method == "GET" else NO_SESSION), None
    if not sid:
        return NO_SESSION, None
    if not valid_session_id(sid) or "," in sid:     # Envoy joins repeated headers with commas
        return Session(legacy_sse=legacy_sse), Denial(
            MALFORMED_REQUEST, "malformed or repeated mcp-session-id", _status(shape, deny_status))
    # Resuming a stream (streamable HTTP): the server replays what it sent on it, lists included.
    resumed = http.method == "GET" and bool(http.headers.get("last-event-id"))
    session = new(Session, (sid, legacy_sse, False, resumed, ""))
    if not ctx.policy.sessions.bind_to_caller:
        return session, None
    sessions = ctx.sessions
    if caller is not None and ctx.shared_claims and sessions.owner(sid) is None and not sessions.ended(sid):
        # Never seen here: whoever holds it elsewhere owns it. Denied until the claim says.
        return Session(sid, legacy_sse, False, resumed, sid), Denial(
            NOT_ALLOWED, "the session's owner is not confirmed", _status(shape, deny_status))
    # (an anonymous request, where the policy lets them in, never rides a bound session)
    if not sessions.owner_ok(sid, caller.key if caller is not None else ""):
        return session, Denial(SESSION_HIJACK, "session belongs to another caller", _status(shape, deny_status))
    if caller is not None and not sessions.has_room(sid):
        # never make room by dropping a live binding: that would free its id for anyone
        return session, Denial(RATE_LIMITED, "sessions.maxSessions live sessions are bound: no room for "
                               "another", _status(shape, deny_status))
    return session, None


# -- arguments --------------------------------------------------------------------------------------
def _arguments(http: HttpRequest, ctx: Context, server: ServerPolicy, caller: Caller | None, sid: str,
               messages: list[Message], shape: Shape, deny_status: int) -> tuple[Checked, Denial | None]:
    # 2026-07-28 routing headers must agree with the body (only one message per request there).
    if len(messages) == 1:
        if mismatch := mcp_headers.routing_mismatch(http.headers, messages[0]):
            return _UNCHECKED, Denial(HEADER_MISMATCH, mismatch, _status(shape, deny_status))
    elif any(h.startswith("mcp-method") or h.startswith("mcp-name") for h in http.headers):
        return _UNCHECKED, Denial(HEADER_MISMATCH, "routing headers on a batch", _status(shape, deny_status))
    policy = ctx.policy
    key = caller.key if caller is not None else ""
    seen = None
    if ctx.visibility is not None and policy.sessions.visibility_binding:
        seen = ctx.visibility.view(server.name, sid, key)
    linked = ctx.links.view(server.name, sid, key) if ctx.links is not None else None
    status = _status(shape, deny_status)
    if len(messages) == 1:
        return _one(messages[0], server, caller, ctx, http.headers, seen, linked, status)
    verdicts: list[Verdict] = []
    learn: list[Learn] = []
    first_denial: Verdict | None = None
    for m in messages:
        v = decide_message(m, server, caller, ctx, http.headers, seen, linked)
        verdicts.append(v)
        if v.reason is ALLOWED:
            if m.method in LEARN_METHODS and m.kind == "request":
                learn.append(new(Learn, (m.id, m.method, "cursor" not in m.params)))
        elif first_denial is None:
            first_denial = v
    if first_denial is not None:
        return new(Checked, (verdicts, (), "", "", None)), new(Denial, (
            first_denial.reason, first_denial.detail, status, "", "", None))
    if len(learn) > MAX_ENTRIES:
        # More than the learn header carries: its lists could be neither learned nor filtered.
        return Checked(verdicts, (), "", "", None), Denial(
            PAYLOAD_TOO_LARGE, f"a batch may carry at most {MAX_ENTRIES} list, initialize and "
            f"server/discover requests ({len(learn)} here)", status)
    return new(Checked, (verdicts, tuple(learn), "", "", None)), None


def _one(m: Message, server: ServerPolicy, caller: Caller | None, ctx: Context, headers: dict[str, str],
         seen: SeenView | None, linked: LinkView | None, status: int) -> tuple[Checked, Denial | None]:
    """A single message (nearly every request): its verdict names the request and its rule."""
    v = decide_message(m, server, caller, ctx, headers, seen, linked)
    reason, detail, rule, name, _ = v
    method = m.method
    arguments = m.params.get("arguments") if ctx.policy.audit.log_arguments and method in _LOGGED_ARGUMENTS \
        else None
    if reason is not ALLOWED:
        return new(Checked, ((v,), (), name, rule, arguments)), new(Denial, (reason, detail, status, "", "", None))
    learn = (new(Learn, (m.id, method, "cursor" not in m.params)),) \
        if method in LEARN_METHODS and m.kind == "request" else ()
    return new(Checked, ((v,), learn, name, rule, arguments)), None


_LOGGED_ARGUMENTS = frozenset({"tools/call", "prompts/get"})     # audit.logArguments


def _requested_name(messages: list[Message]) -> str:
    """The tool, prompt or resource URI a single request names, for the log line of a denial
    decided before the message itself is (risk_blocked, rate_limited)."""
    if len(messages) != 1:
        return ""
    kind = BY_CAPABILITY_METHOD.get(messages[0].method)
    value = messages[0].params.get(kind.key_field) if kind is not None else None
    return value[:200] if type(value) is str else ""


def _query_session(path: str) -> str:
    values = urllib.parse.parse_qs(path.split("?", 1)[1], keep_blank_values=True).get("session_id", [])
    if len(values) > 1:
        return ",".join(values)         # repeated: refused below like a repeated header
    return values[0] if values else ""


def _decoded_body(http: HttpRequest, policy: Policy, limits: Limits) -> tuple[bytes, tuple[Reason, str] | None]:
    enc = http.headers.get("content-encoding")
    if enc is None:
        return http.body, None
    enc = enc.strip().lower()
    if enc in ("", "identity"):
        return http.body, None
    if enc != "gzip" or "gzip" not in policy.limits.decode:
        return b"", (MALFORMED_REQUEST, f"content-encoding {enc!r} is not accepted")
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(http.body, limits.max_body_bytes + 1)
        if len(out) > limits.max_body_bytes or d.unconsumed_tail:
            return b"", (PAYLOAD_TOO_LARGE, "decoded body larger than maxBodyBytes")
        if not d.eof:
            return b"", (MALFORMED_REQUEST, "truncated gzip body")
        return out, None
    except (zlib.error, gzip.BadGzipFile) as e:
        return b"", (MALFORMED_REQUEST, f"bad gzip body: {e}")


