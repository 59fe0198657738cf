"""`extauthz suggest-policy`: a least-privilege policy written from observed use, for review.

Input is the inventory document (`/v1/inventory`). For every capability that was *allowed* at
least once, one exact rule allowing the groups whose members used it (callers without groups: by
subject). Nothing denied, probed or merely published becomes a rule; those are listed as comments.
Everything else is kept from the running policy: its settings, each server's `match`, `upstream`,
`specFile`, and, per rule, the constraints, `schemaStrictness`, `sensitive` and any `subjects` /
`clients` restriction of the rule that allowed the use, so the suggestion never loosens them.

Which group justified a use: when the rule that allowed it names groups, the caller's groups that
rule names; otherwise every group of the caller (a caller in several groups counts for each:
narrow those by hand; the comments say which rules that affects).

Output is YAML with comments; `extauthz check-policy` accepts it. Scalars are always double-quoted
with escapes, and comment text is reduced to printable characters on one line: capability names
come from MCP servers and must not be able to inject YAML or break out of a comment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from extauthz.mcp.kinds import Kind
from extauthz.policy.globs import is_glob
from extauthz.policy.semantics import text_problem

_KIND_KEY = {"tools": ("tools", "name"), "prompts": ("prompts", "name"),
             "resources": ("resources", "uri"), "resourceTemplates": ("resources", "uri")}


def yq(s: str) -> str:
    """A YAML double-quoted scalar that reads back as exactly `s`."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif (0x20 <= o <= 0x7E or 0xA0 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000) \
                and o not in (0x2028, 0x2029, 0xFEFF):
            out.append(ch)
        elif o <= 0xFF:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def flow(v: Any) -> str:
    """A JSON-like value as one line of YAML flow style."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return yq(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


def _key(k: str) -> str:
    return k if k.isidentifier() and k.isascii() else yq(k)


def comment(text: str) -> str:
    """One line of comment text: printable characters only (no newline to escape the comment)."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return clean if len(clean) <= 160 else clean[:157] + "..."


def _justifying_groups(group_sets: list[list[str]], rule: dict[str, Any] | None) -> tuple[list[str], bool]:
    """(groups, ambiguous): the groups to allow, and whether some caller was in several of them."""
    named = set(rule["allow"]["groups"]) if rule and "groups" in rule.get("allow", {}) else None
    out: set[str] = set()
    ambiguous = False
    for gs in group_sets:
        g = set(gs) & named if named is not None else set(gs)
        ambiguous |= len(g) > 1
        out |= g
    return sorted(out), ambiguous


def _rule(kind: str, pattern: str, usage: dict[str, Any], rule: dict[str, Any] | None,
          notes: list[str]) -> list[str] | None:
    used_by = usage.get("usedBy") or {}
    groups, ambiguous = _justifying_groups(used_by.get("groupSets") or [], rule)
    subjects = sorted(used_by.get("subjects") or [])
    running = (rule or {}).get("allow", {})
    allow: dict[str, Any] = {}
    if groups:
        allow["groups"] = groups
        if subjects:
            notes.append(f"callers without groups also used it ({', '.join(subjects)}): not allowed here "
                         "(one rule cannot allow groups OR subjects)")
    elif subjects:
        allow["subjects"] = sorted(set(subjects) & set(running["subjects"])) if "subjects" in running else subjects
    else:
        return None
    if "subjects" in running and "subjects" not in allow:
        allow["subjects"] = list(running["subjects"])
    if "clients" in running:
        allow["clients"] = list(running["clients"])
    if ambiguous:
        notes.append("a caller in several of these groups used it: each counts; narrow by hand")
    field = _KIND_KEY[kind][1]
    lines = [f"- {field}: {yq(pattern)}", f"  allow: {flow(allow)}"]
    if rule:
        if rule.get("constraints") and kind in ("tools", "prompts"):
            lines.append(f"  constraints: {flow(rule['constraints'])}")
        if rule.get("schemaStrictness") and kind == "tools":
            lines.append(f"  schemaStrictness: {yq(rule['schemaStrictness'])}")
        if rule.get("sensitive"):
            lines.append("  sensitive: true")
    return lines


def _describe_use(usage: dict[str, Any]) -> str:
    who = sorted({c.get("subject", "?") for c in usage.get("callers") or []})
    by = f"; callers {', '.join(who[:6])}{' ...' if len(who) > 6 else ''}" if who else ""
    return f"{usage.get('allowed', 0)} allowed, {usage.get('denied', 0)} denied{by}; last {usage.get('lastUse') or '-'}"


def _server_block(s: dict[str, Any]) -> list[str]:
    pol = s.get("policy") or {}
    lines = [f"  - name: {yq(s['server'])}"]
    info = s.get("serverInfo") or {}
    if info.get("name"):
        lines.insert(0, f"  # {comment(info['name'])} {comment(info.get('version', ''))}".rstrip())
    lines.append(f"    match: {flow(pol['match'])}")
    for key in ("upstream", "specFile", "schemaStrictness"):
        if pol.get(key):
            lines.append(f"    {key}: {yq(pol[key])}")
    rules: dict[str, list[list[str]]] = {"tools": [], "resources": [], "prompts": []}
    seen: dict[str, set[str]] = {"tools": set(), "resources": set(), "prompts": set()}
    unused: dict[str, list[str]] = {"tools": [], "resources": [], "prompts": []}
    candidates: list[tuple[str, str, dict[str, Any]]] = []
    for k in Kind:
        kind = k.value
        for cap in s.get(kind) or []:
            candidates.append((kind, cap[k.key_field], cap))
    for u in s.get("unlisted") or []:
        if (u.get("usage") or {}).get("allowed"):
            candidates.append((u["kind"], u["name"], {**u, "unlisted": True}))
    for kind, name, cap in candidates:
        section = _KIND_KEY[kind][0]
        usage = cap.get("usage") or {}
        if not usage.get("allowed"):
            unused[section].append(name)
            continue
        notes: list[str] = []
        if cap.get("overflow"):
            rules[section].append([f"# {usage.get('allowed', 0)} allowed reads of URIs past the inventory's bound "
                                   "(not written: review the decision log)"])
            continue
        why = text_problem(name) if isinstance(name, str) else "not a string"
        if why or is_glob(name) or name in seen[section]:
            reason = why or ("contains '*' (would be a glob)" if is_glob(name) else "already has a rule")
            rules[section].append([f"# not written: {comment(name)}: {comment(reason)}"])
            continue
        body = _rule(kind, name, usage, cap.get("rule"), notes)
        if body is None:
            rules[section].append([f"# {comment(name)}: used only by unauthenticated callers; not written"])
            continue
        seen[section].add(name)
        head = [f"# {comment(name)}: {comment(_describe_use(usage))}"]
        if cap.get("rule"):
            head.append(f"#   was {comment(cap['rule']['id'])} {comment(flow(cap['rule']['allow']))}")
        if kind == "resourceTemplates" and usage.get("uris"):
            head.append(f"#   URIs read: {comment(', '.join(usage['uris']))}")
        if cap.get("unlisted"):
            head.append("#   not published by the server (allowed because unknownCapability is allow)")
        if cap.get("sensitivity"):
            head.append(f"#   sensitive: {comment(', '.join(cap['sensitivity']))}")
        if cap.get("quarantined"):
            head.append(f"#   QUARANTINED now: {comment(cap['quarantined'])}")
        head += [f"#   note: {comment(n)}" for n in notes]
        rules[section].append(head + body)
    for section in ("tools", "resources", "prompts"):
        if not rules[section]:
            lines.append(f"    {section}: []")
        else:
            lines.append(f"    {section}:")
            for block in rules[section]:
                lines += [f"      {line}" for line in block]
        if unused[section]:
            names = ", ".join(comment(n) for n in unused[section])
            lines.append(f"    # published, no allowed use seen (denied under this policy): {comment(names)}")
    return lines


def suggest_policy(inv: dict[str, Any], *, source: str = "") -> str:
    """The suggested policy YAML for an inventory document."""
    policy = inv.get("policy") or {}
    config = dict(policy.get("config") or {})
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = [
        "# mcp-extauthz policy suggested from observed use by `extauthz suggest-policy`",
        f"# from {comment(source or 'an inventory document')} at {now}; inventory generated "
        f"{comment(inv.get('generatedAt') or '-')}",
        f"# running policy: {comment(policy.get('source', '-'))} ({comment(policy.get('digest', '')[:12])})",
        "#",
        "# Each rule allows exactly the groups whose members were ALLOWED to use that capability",
        "# (denied attempts, probes and capabilities nobody used are not rules; they are listed in",
        "# comments). Constraints, schemaStrictness, sensitive and subjects/clients restrictions are",
        "# copied from the rule that allowed the use. Review before applying:",
        "#   extauthz check-policy THIS_FILE",
        "#   extauthz replay --policy THIS_FILE --traffic recorded.jsonl   # what it would have done",
        "# Traffic seen is only what happened while the service ran: a capability used monthly may be",
        "# missing.",
    ]
    if not policy.get("complete", True):
        out.append("# NOTE: the running policy file could not be re-read: settings below are partial.")
    if policy.get("adminToken"):
        out.append("# admin.token is not copied (a secret): add it back if you use write endpoints.")
    out += ["", "apiVersion: mcp-extauthz/v1", "kind: Policy"]
    out.append(f"mode: {yq(config.pop('mode', policy.get('mode', 'enforce')))}")
    for key, value in config.items():
        out.append(f"{_key(key)}: {flow(value)}")
    servers = [s for s in inv.get("servers", []) if s.get("covered") and s.get("policy")]
    out.append("")
    out.append("servers:" if servers else "servers: []")
    for s in servers:
        out += _server_block(s)
    others = [s for s in inv.get("servers", []) if not (s.get("covered") and s.get("policy"))]
    if others:
        out.append("")
        out.append("# Seen but not in the running policy (add a servers entry after reviewing their spec,")
        out.append("# e.g. with `extauthz discover URL`):")
        for s in others:
            t = s.get("traffic") or {}
            callers = ", ".join(c.split("|")[1] if c.count("|") == 2 else c for c in t.get("callers") or [])
            out.append(f"#   {comment(s['server'])}: {t.get('requests', 0)} requests ({t.get('allowed', 0)} allowed)"
                       f"{' by ' + comment(callers) if callers else ''}; authorities "
                       f"{comment(', '.join(t.get('authorities') or []) or '-')}, paths "
                       f"{comment(', '.join(t.get('paths') or []) or '-')}")
    return "\n".join(out) + "\n"
