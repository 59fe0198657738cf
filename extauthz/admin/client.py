"""Admin-port clients: `extauthz inventory`, `extauthz approve`, `extauthz suggest-policy`.

Text printed to a terminal comes from MCP servers (names, descriptions): control and format
characters are shown as `\\xNN` / `\\uNNNN`, so a tool name cannot carry terminal escape sequences.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
import urllib.error
import urllib.request
from typing import Any, TextIO

from extauthz.mcp.kinds import KIND_NAMES, spec_kind

CELL = 48
_KIND = {"tools": "tool", "resources": "resource", "resourceTemplates": "template", "prompts": "prompt"}


def safe_text(value: Any, width: int = CELL) -> str:
    out = []
    for ch in str(value):
        if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) <= 0xFF else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if width <= 0 or len(text) <= width else text[: width - 1] + "\u2026"


def fetch_inventory(admin: str) -> dict[str, Any]:
    with urllib.request.urlopen(admin.rstrip("/") + "/v1/inventory", timeout=10) as r:  # noqa: S310 - operator's URL
        doc = json.load(r)
    if not isinstance(doc, dict):
        raise ValueError("not an inventory document")
    return doc


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip(), file=out)


def _callers(usage: dict[str, Any] | None) -> str:
    if not usage or not usage.get("callers"):
        return "-"
    parts = [f"{c['subject']}({','.join(c['groups'])})" if c.get("groups") else c["subject"]
             for c in usage["callers"][:3]]
    more = len(usage["callers"]) - 3
    return ", ".join(parts) + (f" +{more}" if more > 0 else "")


def _coverage(cap: dict[str, Any]) -> str:
    rule = cap.get("rule")
    if not rule:
        return "UNCOVERED"
    allow = rule.get("allow", {})
    who = "; ".join(f"{k} {','.join(allow[k])}" for k in ("groups", "subjects", "clients") if k in allow) \
        or "authenticated"
    return f"{rule['id']} ({who})"


def print_table(inv: dict[str, Any], out: TextIO, server: str | None = None) -> None:
    servers = [s for s in inv.get("servers", []) if server is None or s["server"] == server]
    rows: list[tuple[str, ...]] = [("SERVER", "STATUS", "SERVER INFO", "PROTOCOLS", "SEEN AT", "REQUESTS", "ALLOWED",
                                    "DENIED", "LAST SEEN", "CALLERS")]
    for s in servers:
        t = s.get("traffic") or {}
        info = s.get("serverInfo") or {}
        status = "shadow" if s.get("shadow") else "covered" if s.get("covered") else "NOT IN POLICY"
        seen = ", ".join(f"{a}{p}" for a in (t.get("authorities") or [])[:2] for p in (t.get("paths") or [""])[:1])
        rows.append((safe_text(s["server"]), status + (" pinned" if s.get("pinned") else ""),
                     safe_text(f"{info.get('name', '')} {info.get('version', '')}".strip() or "-", 30),
                     ",".join(s.get("protocolVersions") or []) or "-", safe_text(seen or "-"),
                     str(t.get("requests", 0)), str(t.get("allowed", 0)), str(t.get("denied", 0)),
                     t.get("lastSeen") or "-", str(len(t.get("callers") or []))))
    print("SERVERS", file=out)
    _table(rows, out)

    rows = [("SERVER", "KIND", "NAME", "SENSITIVITY", "COVERAGE", "STATE", "SOURCE", "CALLERS", "LAST USE",
             "ALLOWED", "DENIED")]
    for s in servers:
        for kind in KIND_NAMES:
            for cap in s.get(kind) or []:
                name = cap.get("name") if kind in ("tools", "prompts") else cap.get("uri") or cap.get("uriTemplate")
                usage = cap.get("usage") or {}
                sens = list(cap.get("sensitivity") or []) + [f"{c}(resp)" for c in
                                                             (usage.get("responses") or {}).get("sensitivity") or []]
                state = [x for x in ("QUARANTINED" if cap.get("quarantined") else "",
                                     "HIDDEN-INSTRUCTIONS" if cap.get("hiddenInstructions") else "") if x]
                rows.append((safe_text(s["server"]), _KIND[kind], safe_text(name), safe_text(",".join(sens) or "-"),
                             safe_text(_coverage(cap), 60), ",".join(state) or "-", cap.get("source") or "-",
                             safe_text(_callers(usage), 60), usage.get("lastUse") or "-",
                             str(usage.get("allowed", 0)), str(usage.get("denied", 0))))
        for u in s.get("unlisted") or []:
            usage = u.get("usage") or {}
            rows.append((safe_text(s["server"]), _KIND.get(u["kind"], u["kind"]), safe_text(u["name"]), "-",
                         safe_text(_coverage(u), 60), "NOT PUBLISHED", "traffic", safe_text(_callers(usage), 60),
                         usage.get("lastUse") or "-", str(usage.get("allowed", 0)), str(usage.get("denied", 0))))
    print(file=out)
    print("CAPABILITIES", file=out)
    _table(rows, out)

    quarantined = [q for q in inv.get("quarantined", []) if server is None or q["server"] == server]
    if quarantined:
        print(file=out)
        print("QUARANTINED (approve with: extauthz approve --admin URL --token T SERVER KIND NAME)", file=out)
        _table([("SERVER", "KIND", "NAME", "WHY")] + [(safe_text(q["server"]), q["kind"], safe_text(q["name"]),
                                                        safe_text(q.get("why", ""), 80)) for q in quarantined], out)
    hidden = [w for w in inv.get("hiddenInstructions", []) if server is None or w["server"] == server]
    if hidden:
        print(file=out)
        print("HIDDEN INSTRUCTIONS IN DESCRIPTIONS", file=out)
        _table([("SERVER", "KIND", "NAME", "FLAGS")] + [(safe_text(w["server"]), _KIND.get(w["kind"], w["kind"]),
                                                         safe_text(w["name"]), safe_text(", ".join(w["flags"]), 80))
                                                        for w in hidden], out)
    drift = [d for d in inv.get("drift", []) if server is None or d["server"] == server]
    if drift:
        print(file=out)
        print("RECENT DRIFT (newest first)", file=out)
        _table([("TIME", "SERVER", "KIND", "NAME", "CHANGE", "QUARANTINED")] +
               [(d["time"] or "-", safe_text(d["server"]), _KIND.get(d["kind"], d["kind"]), safe_text(d["name"]),
                 d["change"], "yes" if d["quarantined"] else "-") for d in drift[:20]], out)


def inventory_main(admin: str, fmt: str, out: TextIO | None = None, server: str | None = None) -> int:
    out = out or sys.stdout
    try:
        inv = fetch_inventory(admin)
    except (OSError, ValueError) as e:
        print(f"cannot read inventory from {admin}: {e}", file=sys.stderr)
        return 1
    if fmt == "json":
        if server is not None:
            inv = {**inv, "servers": [s for s in inv.get("servers", []) if s["server"] == server]}
        json.dump(inv, out, indent=2)
        print(file=out)
        return 0
    print_table(inv, out, server)
    return 0


def approve_main(admin: str, token: str | None, server: str, kind: str, name: str, out: TextIO | None = None) -> int:
    """POST /v1/approve: lift the quarantine of one changed capability (after reviewing the change)."""
    out = out or sys.stdout
    token = token or os.environ.get("EXTAUTHZ_ADMIN_TOKEN")
    if not token:
        print("an admin token is needed: --token T or EXTAUTHZ_ADMIN_TOKEN", file=sys.stderr)
        return 2
    body = json.dumps({"server": server, "kind": spec_kind(kind), "name": name}).encode()
    req = urllib.request.Request(admin.rstrip("/") + "/v1/approve", data=body, method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - operator's URL
            result = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            detail = "not quarantined (nothing to approve): check SERVER KIND NAME with `extauthz inventory`"
        else:
            try:
                detail = str(json.load(e).get("error", ""))
            except (ValueError, AttributeError):
                detail = ""
        print(f"approve refused ({e.code}): {detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"cannot reach {admin}: {e}", file=sys.stderr)
        return 1
    if not result.get("approved"):
        print("not approved", file=sys.stderr)
        return 1
    print(f"approved: {safe_text(server)} {spec_kind(kind)} {safe_text(name, 0)} (calls to it are allowed again)",
          file=out)
    return 0


def suggest_main(admin: str, out_path: str | None, inventory_file: str | None = None,
                 out: TextIO | None = None) -> int:
    """Write a policy suggested from observed use (see `extauthz.policy.suggest`)."""
    from extauthz.policy.suggest import suggest_policy

    out = out or sys.stdout
    try:
        if inventory_file:
            with open(inventory_file, encoding="utf-8") as f:
                inv = json.load(f)
            source = inventory_file
        else:
            inv = fetch_inventory(admin)
            source = admin
    except (OSError, ValueError) as e:
        print(f"cannot read inventory from {inventory_file or admin}: {e}", file=sys.stderr)
        return 1
    text = suggest_policy(inv, source=source)
    if out_path and out_path != "-":
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {out_path}; check it with: extauthz check-policy {out_path}", file=sys.stderr)
    else:
        out.write(text)
    return 0
