"""The inventory as one read-only HTML page (`GET /inventory` on the admin port).

Server-rendered from the same document as `/v1/inventory`, no scripts, no external assets (the
pod has no internet). Capability names, descriptions and server info come from MCP servers and
are attacker-controlled: every value goes through markupsafe's `escape` (the only way text
reaches the page is `tag`, which escapes whatever is not already `Markup` it built), and the response's
Content-Security-Policy allows no script at all and only this page's own stylesheet.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from extauthz.mcp.kinds import KIND_NAMES

MAX_DESCRIPTION = 240
_VOID = frozenset({"meta", "br", "hr", "link"})


Child = Any     # str (escaped), Markup (kept), None (dropped), or an iterable of those


def esc(value: Any) -> Markup:
    """`value` escaped (Markup kept as it is); None is empty."""
    return escape("" if value is None else value)


def _flat(children: Iterable[Child]) -> Iterable[Markup]:
    for c in children:
        if c is None or c is False:
            continue
        if isinstance(c, (list, tuple)) or (not isinstance(c, str) and hasattr(c, "__iter__")):
            yield from _flat(c)
        else:
            yield esc(c)


def tag(name: str, *children: Child, **attrs: Any) -> Markup:
    """`tag("td", "x", class_="n")` -> <td class="n">x</td>; attribute values are escaped too."""
    a = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items()
                if v is not None and v is not False)
    if name in _VOID:
        return Markup(f"<{name}{a}>")
    return Markup(f"<{name}{a}>{''.join(_flat(children))}</{name}>")


def visible(text: str) -> str:
    """Show invisible characters (zero-width, bidi controls, tags) as <U+XXXX> so a reviewer sees
    what the model would read."""
    out = []
    for ch in text:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cf", "Cc", "Co", "Cn"):
            out.append(f"\u27e8U+{ord(ch):04X}\u27e9")
        else:
            out.append(ch)
    return "".join(out)


CSS = """
:root{--bg:#f6f7f9;--fg:#1c2330;--mut:#5b6577;--line:#d9dee7;--card:#fff;--red:#b3261e;--redbg:#fdecea;
--amb:#8a5300;--ambbg:#fff4e0;--grn:#1e6b35;--grnbg:#e7f5ea;--blu:#1f4e99;--blubg:#e8effb;--pur:#5b2a86;--purbg:#f1e8fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--fg)}header{background:#18202e;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#b9c2d3;font-size:12px}
main{padding:16px 24px 40px}section{margin:0 0 22px}h2{font-size:16px;margin:0 0 8px}
h3{font-size:14px;margin:14px 0 6px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:var(--mut);font-size:12px}
.card.bad{border-color:var(--red);background:var(--redbg)}.card.warn{border-color:var(--amb);background:var(--ambbg)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}
th{background:#eef1f5;font-size:12px;color:var(--mut);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font:12px ui-monospace,Menlo,Consolas,monospace}
.b{display:inline-block;border-radius:10px;padding:0 8px;margin:1px 2px 1px 0;font-size:11px;font-weight:600;
white-space:nowrap}.b.red{background:var(--redbg);color:var(--red)}.b.amb{background:var(--ambbg);color:var(--amb)}
.b.grn{background:var(--grnbg);color:var(--grn)}.b.blu{background:var(--blubg);color:var(--blu)}
.b.pur{background:var(--purbg);color:var(--pur)}.b.gry{background:#eceff3;color:var(--mut)}
.mut{color:var(--mut)}.desc{max-width:420px;color:var(--mut);font-size:12px}
.alert{border-left:4px solid var(--red);background:var(--redbg);padding:8px 12px;margin:6px 0}
.alert.warn{border-color:var(--amb);background:var(--ambbg)}
.raw{white-space:pre-wrap;word-break:break-word;font:12px ui-monospace,Menlo,Consolas,monospace;
background:#fff;border:1px solid var(--line);padding:6px;margin:4px 0 0}
tr.q td{background:#fff6f5}.empty{color:var(--mut);font-style:italic}
"""
CSP = ("default-src 'none'; style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
       + "'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "x-frame-options": "DENY", "cache-control": "no-store"}

_SENSITIVE_COLOUR = {"secret": "red", "credentials": "red", "pii": "pur", "financial": "amb", "health": "pur"}
_KIND = {"tools": "tool", "resources": "resource", "resourceTemplates": "template", "prompts": "prompt"}


def _when(iso: str | None, now: datetime) -> Markup:
    if not iso:
        return tag("span", "never", class_="mut")
    try:
        t = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return esc(iso)
    s = max(0, int((now - t).total_seconds()))
    ago = f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"
    return tag("span", f"{ago} ago", title=iso)


def _badge(text: str, colour: str = "gry", title: str | None = None) -> Markup:
    return tag("span", text, class_=f"b {colour}", title=title)


def _sensitivity(cap: dict[str, Any]) -> list[Markup]:
    out = [_badge(c, _SENSITIVE_COLOUR.get(c.split(".", 1)[0], "amb"),
                  "; ".join(f"{f['type']} in {f['where']}" for f in cap.get("findings", []) if f["category"] == c)
                  or None)
           for c in cap.get("sensitivity") or []]
    resp = ((cap.get("usage") or {}).get("responses") or {})
    for c in resp.get("sensitivity") or []:
        out.append(_badge(f"{c} (in responses)", _SENSITIVE_COLOUR.get(c.split(".", 1)[0], "amb"),
                          ", ".join(f"{n} {t}" for t, n in (resp.get("findings") or {}).items())))
    return out


def _annotations(cap: dict[str, Any]) -> list[Markup]:
    ann = cap.get("annotations") or {}
    out = []
    if ann.get("destructiveHint") is True:
        out.append(_badge("destructive", "red"))
    if ann.get("readOnlyHint") is True:
        out.append(_badge("read-only", "grn"))
    if ann.get("openWorldHint") is True:
        out.append(_badge("open world", "amb"))
    if ann.get("idempotentHint") is True:
        out.append(_badge("idempotent", "gry"))
    return out


def _allow_text(allow: dict[str, Any]) -> str:
    parts = []
    for k in ("groups", "subjects", "clients"):
        if k in allow:
            parts.append(f"{k}: {', '.join(allow[k])}")
    if allow.get("authenticated") and not parts:
        parts.append("any authenticated caller")
    return "; ".join(parts)


def _coverage(cap: dict[str, Any]) -> Markup:
    rule = cap.get("rule")
    if not rule:
        return _badge("UNCOVERED", "red", "no policy rule: denied to everyone")
    extra = f" + {len(rule['constraints'])} constraint(s)" if rule.get("constraints") else ""
    return tag("span", tag("code", rule["id"]), " ", tag("span", _allow_text(rule["allow"]) + extra, class_="mut"))


def _callers(usage: dict[str, Any] | None) -> Markup:
    if not usage or not usage.get("callers"):
        return tag("span", "-", class_="mut")
    items = [tag("div", c["subject"], " ", tag("span", ", ".join(c["groups"]) or "no groups", class_="mut"))
             for c in usage["callers"][:5]]
    more = len(usage["callers"]) - 5
    return Markup("").join(items) + (tag("div", f"+{more} more", class_="mut") if more > 0 else "")


def _description(text: str) -> Markup:
    text = visible(text or "")
    short = text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "\u2026"
    return tag("div", short, class_="desc", title=text if short != text else None)


def _cap_rows(server: dict[str, Any], now: datetime) -> list[Markup]:
    rows = []
    for kind in KIND_NAMES:
        for cap in server.get(kind) or []:
            key = cap.get("name") if kind in ("tools", "prompts") else cap.get("uri") or cap.get("uriTemplate")
            usage = cap.get("usage")
            state = []
            if cap.get("quarantined"):
                state.append(_badge("QUARANTINED", "red", cap["quarantined"]))
            if cap.get("hiddenInstructions"):
                state.append(_badge("hidden instructions", "red", ", ".join(cap["hiddenInstructions"])))
            state += _annotations(cap)
            title = cap.get("title")
            rows.append(tag(
                "tr",
                tag("td", _badge(_KIND[kind], "blu")),
                tag("td", tag("code", key), tag("div", title, class_="mut") if title else None,
                    _description(cap.get("description") or "")),
                tag("td", _sensitivity(cap) or tag("span", "\u2014", class_="mut", title="nothing sensitive found")),
                tag("td", _coverage(cap)),
                tag("td", state or tag("span", "-", class_="mut")),
                tag("td", cap.get("source") or "-"),
                tag("td", _callers(usage)),
                tag("td", _when(usage.get("lastUse") if usage else None, now)),
                tag("td", str(usage["allowed"]) if usage else "0", class_="num"),
                tag("td", str(usage["denied"]) if usage else "0", class_="num"),
                class_="q" if cap.get("quarantined") else None,
                data_capability=f"{server['server']}/{_KIND[kind]}/{key}",
            ))
    return rows


def _risk_cell(r: dict[str, Any] | None) -> Markup:
    if r is None:
        return esc("0")
    if r["blocked"]:
        return _badge(f"{r['score']:.0f} blocked", "red")
    return _badge(f"{r['score']:.0f}", "amb") if r["alerts"] else esc(f"{r['score']:.0f}")


def _table(headers: list[str], rows: list[Markup], empty: str, **attrs: Any) -> Markup:
    if not rows:
        return tag("p", empty, class_="empty")
    return tag("table", tag("thead", tag("tr", [tag("th", h) for h in headers])), tag("tbody", rows), **attrs)


def _caller_href(caller: str) -> str:
    """The actor page (`/callers/{id}`, extauthz.admin.actor_page) of one caller key."""
    return "/callers/" + quote(caller, safe="")


def render(view: dict[str, Any], *, refresh: int | None = None) -> str:
    """The whole page for an inventory document (`build_view`)."""
    now = datetime.now(UTC)
    summary = view.get("summary", {})
    policy = view.get("policy") or {}
    servers = view.get("servers", [])

    def card(n: Any, label: str, level: str | None = None, anchor: str | None = None) -> Markup:
        body = [tag("b", str(n)), tag("span", label)]
        return tag("a" if anchor else "div", body, class_=f"card {level or ''}".strip(), href=anchor)

    cards = tag("div", [
        card(summary.get("servers", 0), "servers in policy"),
        card(summary.get("shadowServers", 0), "shadow servers", "warn" if summary.get("shadowServers") else None),
        card(summary.get("capabilities", 0), "capabilities"),
        card(summary.get("sensitive", 0), "sensitive", "warn" if summary.get("sensitive") else None),
        card(summary.get("uncovered", 0), "uncovered (no rule)", "warn" if summary.get("uncovered") else None),
        card(summary.get("quarantined", 0), "quarantined", "bad" if summary.get("quarantined") else None),
        card(summary.get("hiddenInstructions", 0), "hidden-instruction warnings",
             "bad" if summary.get("hiddenInstructions") else None),
        card(summary.get("drift", 0), "drift events", "warn" if summary.get("drift") else None),
        card(summary.get("callers", 0), "callers"),
    ], class_="cards")

    alerts: list[Markup] = []
    for q in view.get("quarantined", []):
        alerts.append(tag("div", tag("b", "Quarantined: "), tag("code", f"{q['server']} {q['kind']} {q['name']}"),
                          " ", tag("span", q.get("why", ""), class_="mut"),
                          tag("div", "Calls are denied until reviewed: ",
                              tag("code", "extauthz approve --admin URL --token T "
                                          f"{q['server']} {q['kind']} {q['name']}")),
                          class_="alert"))
    by_key = {(s["server"], k, c.get("name") or c.get("uri") or c.get("uriTemplate")): c
              for s in servers for k in KIND_NAMES for c in s.get(k) or []}
    for w in view.get("hiddenInstructions", []):
        if w["kind"] == "server":
            info = next((s.get("info") or {} for s in servers if s["server"] == w["server"]), {})
            text = info.get("instructions") if isinstance(info.get("instructions"), str) else ""
        else:
            text = by_key.get((w["server"], w["kind"], w["name"]), {}).get("description") or ""
        alerts.append(tag("div", tag("b", "Hidden instructions: "),
                          tag("code", f"{w['server']} {_KIND.get(w['kind'], w['kind'])} {w['name']}"), " ",
                          tag("ul", [tag("li", f) for f in w["flags"]]),
                          tag("div", visible(text), class_="raw") if text else None,
                          class_="alert"))
    risk = {r["caller"]: r for r in view.get("risk", [])}
    for r in sorted(risk.values(), key=lambda r: -r["score"]):
        if not (r["blocked"] or r["alerts"]):
            continue
        who = r["caller"].split("|")[1] if r["caller"].count("|") == 2 else r["caller"]
        last = r["alerts"][-1] if r["alerts"] else None
        alerts.append(tag("div", tag("b", "Blocked caller: " if r["blocked"] else "Attack chain: "), tag("code", who),
                          " ", tag("a", "investigate", href=_caller_href(r["caller"])),
                          f" — risk score {r['score']:.0f} of {r['blockAt']:.0f}",
                          tag("div", last["summary"], class_="mut") if last else None,
                          tag("div", "sessions: ", tag("code", ", ".join(last["sessions"])))
                          if last and last["sessions"] else None,
                          class_="alert bad" if r["blocked"] else "alert warn"))
    for s in servers:
        if s.get("shadow"):
            t = s.get("traffic") or {}
            alerts.append(tag("div", tag("b", "Shadow MCP server: "), tag("code", s["server"].removeprefix("shadow:")),
                              f" \u2014 {t.get('requests', 0)} requests ({t.get('allowed', 0)} allowed) by "
                              f"{len(t.get('callers') or [])} caller(s); no policy entry covers it.",
                              class_="alert warn"))

    server_rows = []
    for s in servers:
        t = s.get("traffic") or {}
        info = s.get("serverInfo") or {}
        status = _badge("shadow", "amb") if s.get("shadow") else _badge("covered", "grn") if s.get("covered") \
            else _badge("not in policy", "red")
        server_rows.append(tag(
            "tr",
            tag("td", tag("code", s["server"]), " ", status, _badge("pinned", "blu") if s.get("pinned") else None),
            tag("td", f"{info.get('name', '')} {info.get('version', '')}".strip() or "-"),
            tag("td", ", ".join(s.get("protocolVersions") or []) or "-"),
            tag("td", ", ".join(t.get("authorities") or []) or "-",
                tag("div", ", ".join(t.get("paths") or []), class_="mut")),
            tag("td", _when(t.get("firstSeen"), now)), tag("td", _when(t.get("lastSeen"), now)),
            tag("td", str(t.get("requests", 0)), class_="num"), tag("td", str(t.get("allowed", 0)), class_="num"),
            tag("td", str(t.get("denied", 0)), class_="num"),
            tag("td", str(len(t.get("callers") or [])), class_="num"),
            data_server=s["server"],
        ))

    server_sections = []
    for s in servers:
        if s.get("shadow"):
            continue
        rows = _cap_rows(s, now)
        unlisted = [tag("tr", tag("td", _badge(_KIND.get(u["kind"], u["kind"]), "gry")),
                        tag("td", tag("code", u["name"])),
                        tag("td", _coverage(u)), tag("td", _callers(u.get("usage"))),
                        tag("td", _when((u.get("usage") or {}).get("lastUse"), now)),
                        tag("td", str((u.get("usage") or {}).get("allowed", 0)), class_="num"),
                        tag("td", str((u.get("usage") or {}).get("denied", 0)), class_="num"),
                        tag("td", ", ".join(f"{k} {n}"
                                            for k, n in ((u.get("usage") or {}).get("denyReasons") or {}).items())))
                    for u in s.get("unlisted") or []]
        server_sections.append(tag(
            "section",
            tag("h3", "Capabilities of ", tag("code", s["server"])),
            _table(["kind", "name / description", "sensitivity", "policy coverage", "state", "source", "callers",
                    "last use", "allowed", "denied"], rows, "nothing learned from this server yet", class_="caps"),
            tag("h3", "Called but not published", class_="mut") if unlisted else None,
            _table(["kind", "name", "coverage", "callers", "last use", "allowed", "denied", "denials"], unlisted, "")
            if unlisted else None,
            id=f"server-{s['server']}",
        ))

    drift_rows = [tag("tr", tag("td", _when(d["time"], now)), tag("td", tag("code", d["server"])),
                      tag("td", _KIND.get(d["kind"], d["kind"])), tag("td", tag("code", d["name"])),
                      tag("td", _badge(d["change"], "amb")),
                      tag("td", _badge("quarantined", "red") if d["quarantined"] else "-"))
                  for d in view.get("drift", [])]
    caller_rows = [tag("tr", tag("td", tag("a", c["subject"], href=_caller_href(c["key"])) if c.get("key")
                             else c["subject"]), tag("td", c.get("clientId") or "-"),
                       tag("td", ", ".join(c.get("groups") or []) or "-"), tag("td", c.get("issuer") or "-"),
                       tag("td", _when(c.get("last"), now)), tag("td", str(c.get("allowed", 0)), class_="num"),
                       tag("td", str(c.get("denied", 0)), class_="num"),
                       tag("td", _risk_cell(risk.get(c.get("key", ""))), class_="num"))
                   for c in view.get("callers", [])[:100]]

    head = [tag("meta", charset="utf-8"), tag("title", "MCP inventory \u2014 mcp-extauthz"),
            Markup(f"<style>{CSS}</style>")]
    if refresh:
        head.append(tag("meta", http_equiv="refresh", content=str(int(refresh))))
    body = [
        tag("header", tag("h1", "MCP inventory"),
            tag("p", f"generated {view.get('generatedAt', '')} \u00b7 policy {policy.get('digest', '')[:12]} "
                     f"({policy.get('mode', 'no policy')}) \u00b7 read-only view of /v1/inventory")),
        tag("main",
            cards,
            tag("section", tag("h2", "Needs attention"),
                alerts or tag("p", "nothing quarantined, no hidden instructions, no shadow servers", class_="empty"),
                id="attention"),
            tag("section", tag("h2", "Servers"),
                _table(["server", "server info", "protocol versions", "seen at", "first seen", "last seen", "requests",
                        "allowed", "denied", "callers"], server_rows, "no MCP servers seen yet"), id="servers"),
            server_sections,
            tag("section", tag("h2", "Recent drift"),
                _table(["when", "server", "kind", "name", "change", "action"], drift_rows,
                       "no server changed a published capability"), id="drift"),
            tag("section", tag("h2", "Callers"),
                _table(["subject", "client", "groups", "issuer", "last seen", "allowed", "denied", "risk"], caller_rows,
                       "no authenticated callers yet"), id="callers")),
    ]
    return str(Markup("<!doctype html>") + tag("html", tag("head", head), tag("body", body), lang="en"))
