"""`extauthz investigate [--admin URL] QUERY [--format table|json] [--since DURATION]`: the actor
view of `/callers/{id}` as text (or its JSON, `/v1/investigate`, for tooling).

Every value printed comes from clients or servers: it goes through `safe_text`, so a tool name or
session id cannot carry terminal escape sequences.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlencode

from extauthz.admin.actor_view import parse_duration
from extauthz.admin.client import safe_text


def _t(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _who(caller: str) -> str:
    parts = caller.split("|")
    return parts[1] if len(parts) == 3 else caller


def _table(rows: Sequence[tuple[str, ...]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip(), file=out)


def print_actor(v: dict[str, Any], out: TextIO) -> None:
    """One actor (the JSON of `ActorView.as_json`) as text."""
    b = v["bounds"]
    total = b["allowed"] + b["denied"]
    s = safe_text
    print(f"ACTOR {s(v['subject'], 0)}  ({s(v['caller'], 0)})", file=out)
    print(f"  issuer {s(v['issuer'] or '-', 0)}  client {s(v['client_id'] or '-', 0)}  groups "
          f"{s(', '.join(v['groups']) or '-', 0)}", file=out)
    print(f"  risk {v['score']:.0f} of {v['block_at']:.0f}{' BLOCKED' if v['blocked'] else ''}  alerts "
          f"{len(v['alerts'])}  decisions {total} in total ({b['allowed']} allowed, {b['denied']} denied)", file=out)
    per = f" per process ({b['processes']} processes)" if b["processes"] > 1 else ""
    print(f"  kept: last {b['timeline_length']} decisions per caller (risk timeline) and last {b['decision_ring']} "
          f"of the service (decision log){per}; {b['kept']} kept for this actor, {b['shown']} shown", file=out)
    if b.get("shared"):
        print(f"  over every replica (Redis): last {b['shared']} decisions per caller", file=out)
    if b.get("partial"):
        print(f"  PARTIAL: {s(b['partial'], 0)}", file=out)
    for m in b["missing"]:
        print(f"  INCOMPLETE: {s(m, 0)} did not answer; its decisions are missing", file=out)

    for a in v["alerts"]:
        print(file=out)
        print(f"ALERT {a['index']}  {_t(a['time'])}  +{a['points']:g}  {s(a['summary'], 0)}", file=out)
        rows: list[tuple[str, ...]] = [("STEP", "STAGE", "TIME", "SESSION", "REASON", "CALL", "DECISION")]
        rows += [(str(n), st["stage"], _t(st["time"]), s(st["session_id"] or "-"), st["reason"],
                  s(f"{st['method']} {st['name']}".strip() or "-"),
                  st["decision_id"] + ("" if st["on_page"] else " (no longer kept)"))
                 for n, st in enumerate(a["steps"], 1)]
        _table(rows, out)
    if v["chain"]:
        print(f"  chain in progress: {' -> '.join(v['chain'])}", file=out)

    print(file=out)
    print("USER SESSIONS", file=out)
    rows = [("SID", "MCP SESSIONS", "FIRST SEEN", "LAST SEEN", "KEPT")]
    rows += [(s(u["user_session"] or "(no sid)"), s(", ".join(m or "(none)" for m in u["mcp_sessions"]), 80),
              _t(u["first_seen"]), _t(u["last_seen"]), str(u["steps"])) for u in v["user_sessions"]]
    _table(rows, out)

    print(file=out)
    print("MCP SESSIONS", file=out)
    rows = [("SESSION", "OWNER", "USER SESSION", "PROTOCOL", "SERVERS", "FIRST SEEN", "LAST SEEN", "KEPT", "DENIED",
             "PRESENTED BY OTHERS")]
    for m in v["mcp_sessions"]:
        owner = "this actor" if m["owner"] == v["caller"] else _who(m["owner"]) if m["owner"] else \
            "ended" if m["ended"] else "-"
        others = ", ".join(f"{_who(p['caller'])} {p['reason']}" for p in m["others"]) or "-"
        rows.append((s(m["session_id"]), s(owner), s(", ".join(m["user_sessions"]) or "-"),
                     m["protocol_version"] or "-",
                     s(", ".join(m["servers"]) or "-"), _t(m["first_seen"]), _t(m["last_seen"]), str(m["steps"]),
                     str(m["denied"]), s(others, 60)))
    _table(rows, out)

    print(file=out)
    print("TIMELINE (oldest first)", file=out)
    rows = [("TIME", "SESSION", "SERVER", "METHOD", "NAME", "VERDICT", "REASON", "STAGE", "CHAIN", "WORKER",
             "DECISION")]
    hit = (v.get("filters") or {}).get("decision", "")
    for st in v["steps"]:
        rows.append((_t(st["time"]), s(st["session_id"] or "-", 24), s(st["server"], 20), st["method"],
                     s(st["name"] or "-", 32), st["verdict"].upper() if st["verdict"] != "allow" else "allow",
                     st["reason"], (st["stage"] or "-") + (f" +{st['points']:g}" if st["points"] else "")
                     + (f" forgiven by {st['forgiven_by']}" if st.get("forgiven_by") else "")
                     + (f" corrects {', '.join(st['forgives'])}" if st.get("forgives") else ""),
                     ", ".join(st["chain"]) or "-",
                     str(st["worker"]) if st["worker"] is not None else s(st.get("replica") or "-", 24),
                     st["decision_id"] + ("  <== " if st["decision_id"] == hit else "")))
    _table(rows, out)


def investigate_main(admin: str, query: str, fmt: str, since: str | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    params = {"q": query}
    if since:
        try:
            parse_duration(since)
        except ValueError as e:
            print(str(e), file=sys.stderr)
            return 2
        params["since"] = since
    url = admin.rstrip("/") + "/v1/investigate?" + urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=15) as r:  # noqa: S310 - operator's URL
            doc = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            doc = json.load(e)
        except ValueError:
            doc = {}
        if e.code != 404 or not isinstance(doc, dict):
            print(f"investigate refused ({e.code}): {doc.get('error', '') if isinstance(doc, dict) else ''}",
                  file=sys.stderr)
            return 1
    except (OSError, ValueError) as e:
        print(f"cannot reach {admin}: {e}", file=sys.stderr)
        return 1
    if fmt == "json":
        json.dump(doc, out, indent=2)
        print(file=out)
        return 0 if doc.get("actor") else 1
    actor = doc.get("actor")
    if actor:
        print_actor(actor, out)
        return 0
    matches = doc.get("matches") or []
    if not matches:
        print(f"no actor matches {safe_text(query, 0)}", file=sys.stderr)
        return 1
    print(f"{len(matches)} actors match {safe_text(query, 0)}; investigate one of them:", file=out)
    _table([("CALLER", "MATCHED BY")] + [(safe_text(x["caller"], 0), x["via"]) for x in matches], out)
    return 1
