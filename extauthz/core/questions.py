"""The three questions for one JSON-RPC message: (1) is it part of the server's published spec,
(2) may this caller use it with these values, (3) do the arguments match the published schema."""

from __future__ import annotations

from typing import Any

from extauthz.core.context import Context
from extauthz.core.decision import ALLOW, Verdict, new
from extauthz.core.reasons import (
    ALLOWED,
    CONSTRAINT_VIOLATED,
    HEADER_MISMATCH,
    MALFORMED_REQUEST,
    NOT_ALLOWED,
    PAYLOAD_TOO_LARGE,
    QUARANTINED,
    SCHEMA_VIOLATION,
    UNKNOWN_CAPABILITY,
    UNKNOWN_METHOD,
)
from extauthz.identity.caller import Caller
from extauthz.mcp import headers as mcp_headers
from extauthz.mcp.jsonrpc import Message
from extauthz.mcp.kinds import BY_CAPABILITY_METHOD, PROMPTS, RESOURCE_TEMPLATES, RESOURCES, TOOLS, Kind
from extauthz.mcp.methods import ALLOWED_PARAMS, FREE_METHODS, NOTIFICATIONS
from extauthz.mcp.names import name_problem, uri_problem
from extauthz.sessions.visibility import shown
from extauthz.specs.validators import Invalid


def decide_message(m: Message, server: Any, caller: Caller | None, ctx: Context,
                   headers: dict[str, str], seen: Any = None, linked: Any = None) -> Verdict:
    """The three questions for one JSON-RPC message."""
    if m.kind == "response":
        return ALLOW              # the client answering a server request (sampling, elicitation)
    method = m.method
    if method in FREE_METHODS:
        return ALLOW
    if m.kind == "notification":
        return ALLOW if method in NOTIFICATIONS else Verdict(UNKNOWN_METHOD, f"unknown notification {method!r}")
    kind = BY_CAPABILITY_METHOD.get(method)
    if kind is None:
        if method == "completion/complete":
            return _completion(m, server, caller, ctx, seen)
        if method == "subscriptions/listen":
            return _listen(m, server, caller, ctx, seen, linked)
        return Verdict(UNKNOWN_METHOD, f"unknown method {method[:100]!r}")
    allowed_params = ALLOWED_PARAMS[method]
    if not allowed_params.issuperset(m.params):
        extra = m.params.keys() - allowed_params
        return Verdict(SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    if kind is TOOLS:
        return _tool_call(m, server, caller, ctx, headers, seen)
    if kind is PROMPTS:
        return _prompt_get(m, server, caller, ctx, seen)
    return _resource(m.params.get(kind.key_field), server, caller, ctx, seen, linked)


def _permitted(rule: Any, caller: Caller | None) -> bool:
    return rule is not None and rule.allow.permits(caller)


def _quarantined(spec: Any, kind: Kind, name: str) -> Verdict | None:
    why = spec.quarantined.get((kind, name))
    # `why` is what held it (a change since approval, or the first-sight screen): say that, not a guess
    return Verdict(QUARANTINED, f"{kind.singular} {name!r} is quarantined: {why}", name=name) if why else None


def _unknown(ctx: Context, what: str, name: str) -> Verdict | None:
    if ctx.policy.defaults.unknown_capability == "deny":
        return Verdict(UNKNOWN_CAPABILITY, f"{what} {name[:200]!r} is not in the server's published spec",
                       name=name)
    return None


def _unseen(seen: Any, kind: str, key: str, what: str) -> Verdict | None:
    """sessions.visibilityBinding: the server publishes this, but never listed it to this session
    (or, without a session, to this caller). Compared with what the server listed, not with what
    filterLists showed, so a capability the policy forbids stays `not_allowed`."""
    if seen is not None and shown(seen, kind, key) is False:
        return Verdict(UNKNOWN_CAPABILITY, f"{what} {key[:200]!r} was never listed to this session",
                       name=key, unseen=True)
    return None


def _named(name: Any, kind: Kind, server: Any, caller: Caller | None, ctx: Context,
           seen: Any = None) -> tuple[Verdict | None, Any, Any]:
    """Questions 1 and 2 for a tool or prompt named in the request: (denial or None, spec entry, rule).

    A clean name, listed by the server (unless the policy lets unknown capabilities through), not
    quarantined, and a rule that permits this caller."""
    if (problem := name_problem(name)) is not None:
        return Verdict(MALFORMED_REQUEST, problem), None, None
    spec = ctx.specs.get(server.name)
    entry = spec.table(kind).get(name) if spec is not None else None
    what = kind.rule_kind
    if entry is None:
        if (v := _unknown(ctx, what, name)) is not None:
            return v, None, None
    elif (v := _quarantined(spec, kind, name)) is not None or (v := _unseen(seen, kind, name, what)) is not None:
        return v, None, None
    rule = server.rule_for(kind.rule_kind, name)
    if not _permitted(rule, caller):
        return new(Verdict, (NOT_ALLOWED, f"{what} {name!r} is not allowed for this caller",
                             rule.rule_id if rule else "", name, False)), None, None
    return None, entry, rule


def _constraints(rule: Any, args: Any, caller: Caller | None, name: str) -> Verdict:
    for c in rule.constraints:
        if not c.check(args, caller):
            return Verdict(CONSTRAINT_VIOLATED, f"argument {c.argument} must be {c.op} {c.claim}",
                           rule.rule_id, name)
    return new(Verdict, (ALLOWED, "", rule.rule_id, name, False))


def _tool_call(m: Message, server: Any, caller: Caller | None, ctx: Context, headers: dict[str, str],
               seen: Any = None) -> Verdict:
    name: Any = m.params.get("name")
    denied, tool, rule = _named(name, TOOLS, server, caller, ctx, seen)
    if denied is not None:
        return denied
    args = m.params.get("arguments", {})
    if type(args) is not dict:
        return Verdict(SCHEMA_VIOLATION, "arguments must be an object", rule.rule_id, name)
    if tool is not None:
        strict = ctx.policy.strictness_of(server, rule) == "strict"
        compiled = ctx.validators.get(tool.input_schema, strict, tool.schema_hash)
        if isinstance(compiled, Invalid):
            return Verdict(SCHEMA_VIOLATION, compiled.reason, rule.rule_id, name)
        if not compiled.is_valid(args):
            return Verdict(SCHEMA_VIOLATION, compiled.first_error(args) or "invalid", rule.rule_id, name)
        if (mismatch := mcp_headers.param_mismatch(headers, tool, args)) is not None:
            return Verdict(HEADER_MISMATCH, mismatch, rule.rule_id, name)
    return _constraints(rule, args, caller, name)


def _prompt_get(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None) -> Verdict:
    name: Any = m.params.get("name")
    denied, prompt, rule = _named(name, PROMPTS, server, caller, ctx, seen)
    if denied is not None:
        return denied
    args = m.params.get("arguments", {})
    if args is None:
        args = {}
    if type(args) is not dict or any(type(v) is not str for v in args.values()):
        return Verdict(SCHEMA_VIOLATION, "prompt arguments must be an object of strings", rule.rule_id, name)
    if prompt is not None:
        undeclared = args.keys() - prompt.arguments.keys()
        if undeclared:
            return Verdict(SCHEMA_VIOLATION, f"undeclared prompt argument {sorted(undeclared)[0][:100]!r}",
                           rule.rule_id, name)
        missing = [a for a, req in prompt.arguments.items() if req and a not in args]
        if missing:
            return Verdict(SCHEMA_VIOLATION, f"missing required prompt argument {missing[0]!r}",
                           rule.rule_id, name)
        lim = ctx.limits.max_string_bytes
        if any(len(v) > lim for v in args.values()):
            return Verdict(PAYLOAD_TOO_LARGE, "prompt argument too long", rule.rule_id, name)
    return _constraints(rule, args, caller, name)


def _resource(uri: Any, server: Any, caller: Caller | None, ctx: Context, seen: Any = None,
              linked: Any = None) -> Verdict:
    if (problem := uri_problem(uri)) is not None:
        return Verdict(MALFORMED_REQUEST, problem)
    spec = ctx.specs.get(server.name)
    template = None
    known = spec is not None and uri in spec.resources
    if spec is not None and not known:
        template = spec.template_for(uri)
        known = template is not None
    if not known:
        # A resource link a tool returned to this session (caller) need not be listed.
        if linked is None or not ctx.links.granted(linked, uri):
            if (v := _unknown(ctx, RESOURCES.label, uri)) is not None:
                return v
    else:
        key, kind = (uri, RESOURCES) if template is None else (template.uri_template, RESOURCE_TEMPLATES)
        if (v := _quarantined(spec, kind, key)) is not None:
            return v
        if (v := _unseen(seen, kind, key, kind.label)) is not None:
            return v
    rule = server.rule_for(RESOURCES.rule_kind, uri)
    if rule is None and template is not None:
        rule = server.rule_for(RESOURCES.rule_kind, template.uri_template)
    if not _permitted(rule, caller):
        return Verdict(NOT_ALLOWED, f"resource {uri[:200]!r} is not allowed for this caller",
                       rule.rule_id if rule else "", uri)
    return new(Verdict, (ALLOWED, "", rule.rule_id, uri, False))


def _listen(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None,
            linked: Any = None) -> Verdict:
    """2026-07-28 `subscriptions/listen`: the notification stream. Resource subscriptions in it
    replace `resources/subscribe`, so each URI must pass exactly what a subscribe would."""
    extra = m.params.keys() - ALLOWED_PARAMS["subscriptions/listen"]
    if extra:
        return Verdict(SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    wanted = m.params.get("notifications")
    if type(wanted) is not dict:
        return Verdict(SCHEMA_VIOLATION, "subscriptions/listen needs a notifications object")
    uris = wanted.get("resourceSubscriptions", [])
    if type(uris) is not list:
        return Verdict(SCHEMA_VIOLATION, "resourceSubscriptions must be a list of URIs")
    for uri in uris:
        v = _resource(uri, server, caller, ctx, seen, linked)
        if not v.allowed:
            return v
    return ALLOW


def _completion(m: Message, server: Any, caller: Caller | None, ctx: Context, seen: Any = None) -> Verdict:
    extra = m.params.keys() - ALLOWED_PARAMS["completion/complete"]
    if extra:
        return Verdict(SCHEMA_VIOLATION, f"undeclared params member {sorted(extra)[0][:100]!r}")
    ref, arg = m.params.get("ref"), m.params.get("argument")
    if type(ref) is not dict or type(arg) is not dict or type(arg.get("name")) is not str \
            or type(arg.get("value")) is not str:
        return Verdict(SCHEMA_VIOLATION, "completion needs ref and argument {name, value}")
    if ref.get("type") == "ref/prompt":
        # Completing a prompt argument happens before it has a value: the prompt must be known and
        # allowed and the argument declared; required arguments are not required yet.
        name: Any = ref.get("name")
        denied, prompt, rule = _named(name, PROMPTS, server, caller, ctx, seen)
        if denied is not None:
            return denied
        if prompt is not None and arg["name"] not in prompt.arguments:
            return Verdict(SCHEMA_VIOLATION, "completion for an undeclared prompt argument", rule.rule_id, name)
        return new(Verdict, (ALLOWED, "", rule.rule_id, name, False))
    if ref.get("type") == "ref/resource":
        uri: Any = ref.get("uri")
        if (problem := uri_problem(uri)) is not None:
            return Verdict(MALFORMED_REQUEST, problem)
        spec = ctx.specs.get(server.name)
        if spec is None or uri not in spec.templates:
            if (v := _unknown(ctx, RESOURCE_TEMPLATES.label, uri)) is not None:
                return v
        elif (v := _unseen(seen, RESOURCE_TEMPLATES, uri, RESOURCE_TEMPLATES.label)) is not None:
            return v
        rule = server.rule_for(RESOURCES.rule_kind, uri)
        if not _permitted(rule, caller):
            return Verdict(NOT_ALLOWED, "resource template not allowed for this caller",
                           rule.rule_id if rule else "", uri)
        return new(Verdict, (ALLOWED, "", rule.rule_id, uri, False))
    return Verdict(SCHEMA_VIOLATION, "unknown completion ref type")
