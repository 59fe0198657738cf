"""The inventory as one JSON document (`/v1/inventory`, `extauthz inventory`, the HTML page,
`extauthz suggest-policy`): what the servers published (learned specs), what the policy says
about it, and what traffic did with it. Built per admin request, never on the Check path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from extauthz.detect.assess import Assessor, response_categories
from extauthz.inventory.store import MAX_CALLERS_PER_CAPABILITY, Inventory, Usage
from extauthz.mcp.kinds import KIND_NAMES, Kind
from extauthz.policy.errors import PolicyError
from extauthz.policy.load import canonical_json, load_policy_document, parse_policy_bytes, resolve_policy_path
from extauthz.policy.model import Policy
from extauthz.specs.store import SpecStore

MAX_VIEW_CALLERS = 500
MAX_SAMPLE_URIS = 5


def iso(t: float) -> str | None:
    if not t:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# -- the policy, as data --------------------------------------------------------------------------
def authority_text(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


def allow_doc(allow: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if allow.groups is not None:
        out["groups"] = sorted(allow.groups)
    if allow.subjects is not None:
        out["subjects"] = sorted(allow.subjects)
    if allow.clients is not None:
        out["clients"] = sorted(allow.clients)
    if allow.authenticated or not out:
        out["authenticated"] = True
    return out


def rule_doc(rule: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rule.rule_id, "pattern": rule.pattern, "allow": allow_doc(rule.allow)}
    if rule.constraints:
        doc["constraints"] = [{"argument": c.argument, c.op: c.claim, **({"optional": True} if c.optional else {})}
                              for c in rule.constraints]
    if rule.schema_strictness:
        doc["schemaStrictness"] = rule.schema_strictness
    if rule.sensitive:
        doc["sensitive"] = True
    return doc


def running_document(policy_path: str, policy: Policy, inv: Inventory) -> dict[str, Any] | None:
    """The running policy as its validated, defaults-filled document (read again from
    `policy_path`, or the packaged default for "<embedded>", and kept only when it hashes to the
    running policy's digest). Cached per policy digest."""
    cached = inv.policy_doc_cache
    if cached is not None and cached[0] == policy.digest:
        return cached[1]
    doc: dict[str, Any] | None = None
    try:
        if policy_path == "<embedded>":
            package = resources.files("extauthz.policy")
            doc = parse_policy_bytes(package.joinpath("default.yaml").read_bytes(), "default.yaml", str(package))
        else:
            doc = load_policy_document(resolve_policy_path(policy_path))
        if hashlib.sha256(canonical_json(doc)).hexdigest() != policy.digest:
            doc = None          # edited since (or broken): don't describe a policy that isn't running
    except (PolicyError, OSError, ValueError):
        doc = None
    inv.policy_doc_cache = (policy.digest, doc)
    return doc


def policy_doc(policy_path: str, policy: Policy | None, inv: Inventory) -> dict[str, Any] | None:
    """The running policy's settings and server matches (never `admin.token`), so a suggested
    policy can keep everything but the rules."""
    if policy is None:
        return None
    doc = running_document(policy_path, policy, inv)
    out: dict[str, Any] = {"digest": policy.digest, "source": policy.source, "mode": policy.mode,
                           "adminToken": bool(policy.admin_token)}
    if doc is not None:
        out["config"] = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "servers", "admin")}
        out["complete"] = True
        return out
    d, ident, lim, ses = policy.defaults, policy.identity, policy.limits, policy.sessions
    sources = []
    for s in ident.sources:
        if s.kind == "jwtMetadata":
            sources.append({"jwtMetadata": {"filter": s.filter, "key": s.key}})
        elif s.kind == "header":
            sources.append({"header": {"name": s.name, "encoding": s.encoding}})
        else:
            sources.append({"mtls": {}})
    out["config"] = {
        "mode": policy.mode,
        "defaults": {"unknownServer": d.unknown_server, "unknownCapability": d.unknown_capability,
                     "unauthenticated": d.unauthenticated, "onDrift": d.on_drift, "filterLists": d.filter_lists,
                     "denyStatus": d.deny_status, "schemaStrictness": d.schema_strictness},
        "identity": {"sources": sources, "subject": ident.subject, "groupsClaim": ident.groups_claim,
                     "clientIdClaims": list(ident.client_id_claims)},
        "limits": {"maxBodyBytes": lim.max_body_bytes, "maxDepth": lim.max_depth,
                   "maxStringBytes": lim.max_string_bytes, "maxArrayItems": lim.max_array_items,
                   "decode": sorted(lim.decode)},
        "sessions": {"bindToCaller": ses.bind_to_caller, "visibilityBinding": ses.visibility_binding,
                     "idleTtlSeconds": ses.idle_ttl_seconds, "maxSessions": ses.max_sessions},
        "audit": {"logArguments": policy.audit.log_arguments},
    }
    out["complete"] = False     # risk settings and newer fields: take them from your policy file
    return out


def server_policy_doc(sp: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"authority": [authority_text(h, p) for h, p in sp.authorities],
                           "pathPrefix": sp.path_prefix}
    out: dict[str, Any] = {"match": doc}
    if sp.upstream:
        out["upstream"] = sp.upstream
    if sp.spec_file:
        out["specFile"] = sp.spec_file
    if sp.schema_strictness:
        out["schemaStrictness"] = sp.schema_strictness
    return out


# -- usage ----------------------------------------------------------------------------------------
def _merged(usages: Iterable[Usage]) -> Usage | None:
    out: Usage | None = None
    for u in usages:
        if out is None:
            out = Usage(u.first)
        out.merge(u.to_json())
    return out


def usage_doc(u: Usage | None, inv: Inventory) -> dict[str, Any] | None:
    if u is None:
        return None
    callers = []
    for key, when in sorted(u.callers.items(), key=lambda kv: -kv[1]):
        c = inv.callers.get(key)
        callers.append({"key": key, "subject": c.subject if c else key.split("|")[1] if key.count("|") == 2 else key,
                        "clientId": c.client_id if c else "", "groups": sorted(c.groups) if c else [],
                        "lastUse": iso(when)})
    groups = sorted({g for gs in u.group_sets for g in gs})
    return {
        "allowed": u.allowed, "denied": u.denied, "firstUse": iso(u.first), "lastUse": iso(u.last),
        "lastAllowed": iso(u.last_allowed), "denyReasons": dict(sorted(u.reasons.items())),
        "callers": callers[:MAX_CALLERS_PER_CAPABILITY],
        "usedBy": {"groups": groups, "groupSets": sorted(sorted(g) for g in u.group_sets),
                   "subjects": sorted(u.subjects)},
        "responses": {"count": u.responses, "bytes": u.response_bytes, "findings": dict(sorted(u.findings.items())),
                      "sensitivity": response_categories(u.findings)},
    }


# -- the view -------------------------------------------------------------------------------------
def build_view(inv: Inventory, specs: SpecStore, policy: Policy | None, policy_path: str,
               assessor: Assessor) -> dict[str, Any]:
    """The inventory joined with the learned `specs` and the running `policy` (None: no policy
    loaded; `policy_path` is where it was read from, "<embedded>" for the default)."""
    inv.flush()
    now = time.time()
    by_server: dict[str, dict[tuple[str, str], Usage]] = {}
    for (server, kind, name), u in inv.usage.items():
        by_server.setdefault(server, {})[(kind, name)] = u
    probes: dict[str, dict[tuple[str, str], Usage]] = {}
    for (server, kind, name), u in inv.probes.items():
        probes.setdefault(server, {})[(kind, name)] = u

    names: list[str] = [s.server for s in specs.servers()]
    seen = set(names)
    for sp in (policy.servers if policy else ()):
        if sp.name not in seen:
            names.append(sp.name)
            seen.add(sp.name)
    for name in [*inv.servers, *by_server, *probes]:
        if name not in seen and not name.startswith("shadow:"):
            names.append(name)
            seen.add(name)
    names += [n for n in reversed(inv.shadow) if n not in seen]

    servers, uncovered, quarantined, warnings = [], [], [], []
    for name in names:
        entry = _server_view(name, inv, specs, assessor, policy, by_server.get(name, {}), probes.get(name, {}))
        servers.append(entry)
        for kind in KIND_NAMES:
            for cap in entry.get(kind, ()):
                key = cap.get("name") if kind in ("tools", "prompts") else cap.get("uri") or cap.get("uriTemplate")
                if not cap["covered"]:
                    uncovered.append({"server": name, "kind": kind, "name": key})
                if cap["hiddenInstructions"]:
                    warnings.append({"server": name, "kind": kind, "name": key, "flags": cap["hiddenInstructions"]})
        if entry["instructionFlags"]:
            warnings.append({"server": name, "kind": "server", "name": "instructions",
                             "flags": entry["instructionFlags"]})
        quarantined += [{"server": name, **q} for q in entry.get("quarantined", ())]

    callers = sorted(inv.callers.items(), key=lambda kv: -kv[1].last)[:MAX_VIEW_CALLERS]
    drift = [{**r.to_json(), "time": iso(r.time)} for r in reversed(inv.drift)]
    return {
        "generatedAt": iso(now),
        "policy": policy_doc(policy_path, policy, inv),
        "summary": {
            "servers": sum(1 for s in servers if not s["shadow"]),
            "shadowServers": sum(1 for s in servers if s["shadow"]),
            "capabilities": sum(len(s.get(k, ())) for s in servers
                                for k in KIND_NAMES),
            "uncovered": len(uncovered), "quarantined": len(quarantined), "hiddenInstructions": len(warnings),
            "sensitive": sum(1 for s in servers for k in KIND_NAMES
                             for c in s.get(k, ()) if c["sensitivity"]),
            "drift": len(drift), "callers": len(inv.callers), "evicted": inv.evicted, "recordErrors": inv.errors,
        },
        "servers": servers,
        "uncovered": uncovered,
        "quarantined": quarantined,
        "hiddenInstructions": warnings,
        "drift": drift,
        "callers": [{"key": k, **c.to_json(), "first": iso(c.first), "last": iso(c.last)} for k, c in callers],
    }


def _server_view(name: str, inv: Inventory, specs: SpecStore, assessor: Assessor, policy: Policy | None,
                 used: dict[tuple[str, str], Usage], probed: dict[tuple[str, str], Usage]) -> dict[str, Any]:
    spec = specs.get(name)
    sp = policy.server_by_name(name) if policy else None
    shadow = name.startswith("shadow:")
    seen = inv.shadow.get(name) if shadow else inv.servers.get(name)
    info = dict(spec.info) if spec else {}
    versions = list(seen.versions) if seen else []
    for v in [info.get("protocolVersion"), *(info.get("supportedVersions") or [])]:
        if isinstance(v, str) and v not in versions:
            versions.append(v)
    out: dict[str, Any] = {
        "server": name, "covered": sp is not None, "shadow": shadow, "pinned": bool(spec and spec.pinned),
        "info": info, "serverInfo": info.get("serverInfo") if isinstance(info.get("serverInfo"), dict) else None,
        "protocolVersions": versions,
        "policy": server_policy_doc(sp) if sp else None,
        "instructionFlags": assessor.text_flags(info.get("instructions")),
        "traffic": None,
    }
    if seen is not None:
        out["traffic"] = {
            "firstSeen": iso(seen.first), "lastSeen": iso(seen.last), "requests": seen.requests,
            "allowed": seen.allowed, "denied": seen.denied, "authorities": list(seen.authorities),
            "paths": list(seen.paths), "methods": dict(seen.methods), "denyReasons": dict(seen.reasons),
            "callers": [k for k, _ in sorted(seen.callers.items(), key=lambda kv: -kv[1])],
        }
    if shadow:
        return out

    def rule(kind: str, key: str) -> Any:
        return sp.rule_for(Kind(kind).rule_kind, key) if sp is not None else None

    def common(kind: str, key: str, entry: Any) -> dict[str, Any]:
        r = rule(kind, key)
        a = assessor.assess(kind, entry)
        q = spec.quarantined.get((kind, key)) if spec else None
        return {"covered": r is not None, "rule": rule_doc(r) if r is not None else None,
                "source": spec.sources.get((kind, key), "traffic") if spec else "traffic",
                "quarantined": q, "sensitivity": list(a.sensitivity),
                "findings": [{"category": f.category, "type": f.type, "where": f.where} for f in a.findings],
                "hiddenInstructions": list(a.hidden)}

    taken: set[tuple[str, str]] = set()
    tools, resources, templates, prompts = [], [], [], []
    if spec is not None:
        for t in spec.tools.values():
            taken.add(("tools", t.name))
            raw = t.raw
            tools.append({"name": t.name, "title": raw.get("title") if isinstance(raw.get("title"), str) else None,
                          "schemaHash": t.schema_hash, "description": t.description,
                          "annotations": raw.get("annotations") if isinstance(raw.get("annotations"), dict) else None,
                          **common("tools", t.name, t), "usage": usage_doc(used.get(("tools", t.name)), inv)})
        for r in spec.resources.values():
            taken.add(("resources", r.uri))
            desc = r.raw.get("description")
            resources.append({"uri": r.uri, "name": r.name, "description": desc if isinstance(desc, str) else "",
                              "mimeType": r.raw.get("mimeType") if isinstance(r.raw.get("mimeType"), str) else None,
                              **common("resources", r.uri, r), "usage": usage_doc(used.get(("resources", r.uri)), inv)})
        # Concrete URIs read (at most MAX_URIS_PER_SERVER per server) fold into the first template
        # that matches them.
        concrete = {uri: u for (kind, uri), u in used.items()
                    if kind == "resources" and uri and ("resources", uri) not in taken}
        for tpl in spec.templates.values():
            hits = [(uri, u) for uri, u in concrete.items() if tpl.matcher.matches(uri)]
            for uri, _ in hits:
                taken.add(("resources", uri))
                del concrete[uri]
            desc = tpl.raw.get("description")
            doc = usage_doc(_merged(u for _, u in hits), inv)
            if doc is not None:
                doc["uris"] = [uri for uri, _ in sorted(hits, key=lambda h: -h[1].last)][:MAX_SAMPLE_URIS]
            templates.append({"uriTemplate": tpl.uri_template, "name": tpl.name,
                              "description": desc if isinstance(desc, str) else "",
                              **common("resourceTemplates", tpl.uri_template, tpl), "usage": doc})
        for p in spec.prompts.values():
            taken.add(("prompts", p.name))
            desc = p.raw.get("description")
            prompts.append({"name": p.name, "arguments": p.arguments,
                            "description": desc if isinstance(desc, str) else "",
                            **common("prompts", p.name, p), "usage": usage_doc(used.get(("prompts", p.name)), inv)})
    unlisted = []
    for (kind, key), u in [*used.items(), *probed.items()]:
        if (kind, key) in taken:
            continue
        found = rule(kind, key) if key else None
        unlisted.append({"kind": kind, "name": key if key else "(more URIs than the inventory keeps)",
                         "overflow": not key, "covered": found is not None,
                         "rule": rule_doc(found) if found is not None else None,
                         "usage": usage_doc(u, inv)})
    out.update({
        "tools": tools, "resources": resources, "resourceTemplates": templates, "prompts": prompts,
        "quarantined": [{"kind": k, "name": n, "why": w} for (k, n), w in (spec.quarantined.items() if spec else ())],
        "unlisted": unlisted,
    })
    return out
