"""The compiled, read-only policy the decision core consults on every request.

Built once per load from the validated document so that the hot path does dict lookups and
set membership only: globs are precompiled, exact names are indexed, servers are indexed by
host. Frozen dataclasses, so a reload swaps a whole Policy and never mutates one in use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from extauthz.mcp import jsonrpc
from extauthz.mcp.kinds import RuleKind

from .authority import parse_authority
from .errors import PolicyError, PolicyIssue
from .globs import Matcher, compile_glob, is_glob
from .load import canonical_json, load_policy_document, parse_policy_bytes, resolve_policy_path
from .rules import Allow, Constraint, Rule

__all__ = [
    "Allow", "Audit", "Constraint", "Defaults", "Identity", "IdentitySource", "Limits", "Policy",
    "PolicyError", "PolicyIssue", "Risk", "Rule", "ServerPolicy", "Sessions", "compile_policy",
    "default_policy", "load_policy", "policy_from_bytes",
]

Strictness = Literal["strict", "as-published"]
_KINDS: tuple[tuple[RuleKind, str, str], ...] = (
    ("tool", "tools", "name"), ("resource", "resources", "uri"), ("prompt", "prompts", "name"))


def _split_path(path: str) -> str:
    """The path without query string or fragment."""
    for sep in ("?", "#"):
        cut = path.find(sep)
        if cut >= 0:
            path = path[:cut]
    return path


RESOLVED_MAX = 4096        # names per server whose rule is remembered
_UNRESOLVED = object()


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """One MCP server: how requests are routed to it and its ACL rules."""

    name: str
    authorities: tuple[tuple[str, int | None], ...]
    path_prefix: str
    upstream: str | None
    spec_file: str | None
    schema_strictness: str | None          # None: inherit defaults.schemaStrictness
    tools: tuple[Rule, ...] = ()
    resources: tuple[Rule, ...] = ()
    prompts: tuple[Rule, ...] = ()
    _exact: Mapping[tuple[str, str], Rule] = field(init=False, repr=False, compare=False)
    _globs: Mapping[str, tuple[tuple[Matcher, Rule], ...]] = field(init=False, repr=False, compare=False)
    _resolved: dict[tuple[str, str], Rule | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: dict[tuple[str, str], Rule] = {}
        globs: dict[str, list[tuple[Matcher, Rule]]] = {"tool": [], "resource": [], "prompt": []}
        for rule in (*self.tools, *self.resources, *self.prompts):
            if is_glob(rule.pattern):
                globs[rule.kind].append((compile_glob(rule.pattern), rule))
            else:
                exact.setdefault((rule.kind, rule.pattern), rule)
        object.__setattr__(self, "_exact", MappingProxyType(exact))
        object.__setattr__(self, "_globs", MappingProxyType({k: tuple(v) for k, v in globs.items()}))
        object.__setattr__(self, "_resolved", {})

    @property
    def rules(self) -> tuple[Rule, ...]:
        return (*self.tools, *self.resources, *self.prompts)

    def rule_for(self, kind: RuleKind, name: str) -> Rule | None:
        """Exact-name rule first, then the first glob in file order; None means deny. Remembered
        per name (this object lives as long as its policy); names beyond RESOLVED_MAX, which a
        client could invent without end, are matched every time instead."""
        key = (kind, name)
        hit = self._resolved.get(key, _UNRESOLVED)
        if hit is not _UNRESOLVED:
            return hit  # type: ignore[return-value]  # not the sentinel: a Rule or None
        rule = self._exact.get(key)
        if rule is None:
            for matcher, candidate in self._globs.get(kind, ()):
                if matcher.matches(name):
                    rule = candidate
                    break
        if len(self._resolved) < RESOLVED_MAX:
            self._resolved[key] = rule
        return rule

    def match_parsed(self, host: str, port: int | None, path: str) -> tuple[int, int] | None:
        """(prefix length, 1 if matched by an entry with an explicit port) or None."""
        specific = -1
        for want_host, want_port in self.authorities:
            if want_host == host and (want_port is None or want_port == port):
                specific = max(specific, 0 if want_port is None else 1)
        if specific < 0:
            return None
        path = _split_path(path)
        if not path.startswith("/"):
            return None
        prefix = self.path_prefix
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return len(prefix), specific
        return None

    def matches(self, authority: str, path: str) -> int:
        """-1 when this server does not serve `authority` + `path`, else the matched prefix length."""
        try:
            host, port = parse_authority(authority)
        except ValueError:
            return -1
        hit = self.match_parsed(host, port, path)
        return -1 if hit is None else hit[0]


@dataclass(frozen=True, slots=True)
class Defaults:
    unknown_server: str = "deny"
    unknown_capability: str = "deny"
    unauthenticated: str = "deny"
    on_drift: str = "quarantine"
    filter_lists: bool = True
    deny_status: int = 200
    schema_strictness: str = "strict"
    hidden_instructions: str = "quarantine"    # quarantine | flag: published text that instructs the model


@dataclass(frozen=True, slots=True)
class IdentitySource:
    """One place a caller can come from; `kind` says which of the optional fields apply."""

    kind: Literal["jwtMetadata", "header", "mtls"]
    filter: str | None = None          # jwtMetadata
    key: str | None = None             # jwtMetadata
    name: str | None = None            # header (lowercased)
    encoding: str | None = None        # header


@dataclass(frozen=True, slots=True)
class Identity:
    sources: tuple[IdentitySource, ...]
    subject: str = "sub"
    groups_claim: str = "groups"
    client_id_claims: tuple[str, ...] = ("client_id", "azp")


@dataclass(frozen=True, slots=True)
class Limits(jsonrpc.Limits):
    """The parser's size limits (a subclass, so the parser takes it as is) and the encodings to decode."""
    decode: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Sessions:
    bind_to_caller: bool = True
    visibility_binding: bool = True
    idle_ttl_seconds: int = 3600
    max_sessions: int = 100000
    shared_state_down: str = "deny"     # a new session while the shared store is away: deny | local


@dataclass(frozen=True, slots=True)
class Risk:
    enabled: bool = True
    block_at: float = 100
    decay_per_minute: float = 1
    volume_per_minute: int = 600
    timeline_length: int = 32
    max_callers: int = 10000
    large_response_bytes: int = 1048576
    calls_per_minute: int = 0             # per caller across sessions; 0 = off (rate_limited)


@dataclass(frozen=True, slots=True)
class Audit:
    log_arguments: bool = False
    observe_responses: str = "sampled"      # sampled | all | off: call results seen over ext_proc


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole policy. `digest` (sha256 of the canonical document) identifies it in logs."""

    mode: str
    defaults: Defaults
    identity: Identity
    servers: tuple[ServerPolicy, ...]
    limits: Limits
    sessions: Sessions
    risk: Risk
    audit: Audit
    admin_token: str | None
    source: str
    digest: str
    _by_name: Mapping[str, ServerPolicy] = field(init=False, repr=False, compare=False)
    _by_host: Mapping[str, tuple[ServerPolicy, ...]] = field(init=False, repr=False, compare=False)
    _routes: dict[tuple[str, str], ServerPolicy | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, ServerPolicy] = {}
        by_host: dict[str, list[ServerPolicy]] = {}
        for server in self.servers:
            by_name.setdefault(server.name, server)
            for host in dict.fromkeys(h for h, _ in server.authorities):
                by_host.setdefault(host, []).append(server)
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_by_host", MappingProxyType({h: tuple(s) for h, s in by_host.items()}))
        object.__setattr__(self, "_routes", {})

    @property
    def monitor(self) -> bool:
        """Monitor mode decides and logs but always allows (never the reverse)."""
        return self.mode == "monitor"

    @property
    def rule_count(self) -> int:
        return sum(len(server.rules) for server in self.servers)

    def server_for(self, authority: str, path: str) -> ServerPolicy | None:
        """The server for a request: longest pathPrefix wins, then a port-specific authority.
        Memoised per (authority, path): the answer depends on nothing else, and traffic reuses a
        handful of both. Bounded: cleared when full."""
        key = (authority, path)
        routes = self._routes
        if key in routes:
            return routes[key]
        if len(routes) >= 4096:
            routes.clear()
        routes[key] = found = self._server_for(authority, path)
        return found

    def _server_for(self, authority: str, path: str) -> ServerPolicy | None:
        try:
            host, port = parse_authority(authority)
        except ValueError:
            return None
        best: ServerPolicy | None = None
        best_score = (-1, -1)
        for server in self._by_host.get(host, ()):
            score = server.match_parsed(host, port, path)
            if score is not None and score > best_score:
                best, best_score = server, score
        return best

    def server_by_name(self, name: str) -> ServerPolicy | None:
        return self._by_name.get(name)

    def strictness_for(self, server: ServerPolicy | None, tool_name: str) -> Strictness:
        """Tool rule's schemaStrictness, else the server's, else defaults.schemaStrictness."""
        return self.strictness_of(server, server.rule_for("tool", tool_name) if server is not None else None)

    def strictness_of(self, server: ServerPolicy | None, rule: Rule | None) -> Strictness:
        """strictness_for, when the tool's rule is already known."""
        if rule is not None and rule.schema_strictness:
            return rule.schema_strictness  # type: ignore[return-value]
        if server is not None and server.schema_strictness:
            return server.schema_strictness  # type: ignore[return-value]
        return self.defaults.schema_strictness  # type: ignore[return-value]


def _server(doc: dict[str, Any], base_dir: str) -> ServerPolicy:
    name = doc["name"]
    match = doc["match"]
    raw = match["authority"]
    authorities = tuple(dict.fromkeys(parse_authority(a) for a in ([raw] if isinstance(raw, str) else raw)))
    prefix = match.get("pathPrefix", "/").rstrip("/") or "/"
    spec = doc.get("specFile")
    kinds: dict[str, tuple[Rule, ...]] = {}
    for kind, key, pattern_key in _KINDS:
        kinds[key] = tuple(
            Rule(kind=kind, pattern=rule[pattern_key], allow=Allow.from_doc(rule["allow"]),
                 constraints=tuple(Constraint.from_doc(c) for c in rule.get("constraints", ())),
                 schema_strictness=rule.get("schemaStrictness"), rule_id=f"{name}.{key}[{i}]",
                 sensitive=bool(rule.get("sensitive", False)))
            for i, rule in enumerate(doc.get(key, ())))
    return ServerPolicy(
        name=name, authorities=authorities, path_prefix=prefix, upstream=doc.get("upstream"),
        spec_file=os.path.normpath(os.path.join(base_dir, spec)) if spec else None,
        schema_strictness=doc.get("schemaStrictness"), **kinds)


def _source(doc: dict[str, Any]) -> IdentitySource:
    ((kind, body),) = doc.items()
    if kind == "jwtMetadata":
        return IdentitySource("jwtMetadata", filter=body.get("filter", "envoy.filters.http.jwt_authn"), key=body["key"])
    if kind == "header":
        return IdentitySource("header", name=body["name"].lower(), encoding=body.get("encoding", "base64url-json"))
    return IdentitySource("mtls")


def compile_policy(doc: dict[str, Any], base_dir: str, source: str = "") -> Policy:
    """Build a Policy from a document that `parse_policy_text` validated and filled."""
    d, ident, lim = doc["defaults"], doc["identity"], doc["limits"]
    ses, risk = doc["sessions"], doc["risk"]
    return Policy(
        mode=doc["mode"],
        defaults=Defaults(d["unknownServer"], d["unknownCapability"], d["unauthenticated"], d["onDrift"],
                          d["filterLists"], int(d["denyStatus"]), d["schemaStrictness"], d["hiddenInstructions"]),
        identity=Identity(tuple(_source(s) for s in ident["sources"]), ident["subject"],
                          ident["groupsClaim"], tuple(ident["clientIdClaims"])),
        servers=tuple(_server(s, base_dir) for s in doc["servers"]),
        limits=Limits(int(lim["maxBodyBytes"]), int(lim["maxDepth"]), int(lim["maxStringBytes"]),
                      int(lim["maxArrayItems"]), frozenset(lim["decode"])),
        sessions=Sessions(ses["bindToCaller"], ses["visibilityBinding"], int(ses["idleTtlSeconds"]),
                          int(ses["maxSessions"]), ses.get("sharedStateDown", "deny")),
        risk=Risk(risk["enabled"], float(risk["blockAt"]), float(risk["decayPerMinute"]),
                  int(risk["volumePerMinute"]), int(risk["timelineLength"]), int(risk["maxCallers"]),
                  int(risk["largeResponseBytes"]), int(risk["callsPerMinute"])),
        audit=Audit(doc["audit"]["logArguments"], doc["audit"]["observeResponses"] or "off"),
        admin_token=doc["admin"].get("token"),
        source=source,
        digest=hashlib.sha256(canonical_json(doc)).hexdigest(),
    )


def policy_from_bytes(data: bytes, source: str, base_dir: str | None = None) -> Policy:
    """Validate and compile policy bytes (what the reload watcher already read)."""
    base_dir = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(source))
    return compile_policy(parse_policy_bytes(data, source, base_dir), base_dir, source)


def load_policy(path: str) -> Policy:
    """Load a policy file (or ConfigMap directory); raises PolicyError listing every issue."""
    path = resolve_policy_path(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return compile_policy(load_policy_document(path), base_dir, path)


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    """The embedded demo policy (`default.yaml`), what `extauthz demo` runs with."""
    package = resources.files("extauthz.policy")
    data = package.joinpath("default.yaml").read_bytes()
    return policy_from_bytes(data, "default.yaml", str(package))
