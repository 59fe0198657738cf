"""`GET /callers/{id}`: one actor on one page (the `ActorView` of `extauthz.admin.actor_view`).

Same rules as `/inventory`: no script, no external asset, a CSP that allows none (only this page's
stylesheet, and GET forms back to this admin port). Subjects, session ids, tool names and details
are attacker-controlled: text reaches the page only through `h`, which escapes it with markupsafe
(and shows control and invisible characters as <U+XXXX>); links are built from url-encoded values.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup, escape

from extauthz.admin.actor_view import STAGES, ActorView, Filters, Step
from extauthz.admin.actors import MAX_HITS
from extauthz.admin.page import CSS as BASE_CSS
from extauthz.admin.page import visible

_VOID = frozenset({"meta", "input", "br"})
_STAGE_COLOUR = {"recon": "blu", "probe": "amb", "extract": "pur"}

CSS = BASE_CSS + """
.cols{display:flex;gap:16px;flex-wrap:wrap}.cols>section{flex:1 1 340px;min-width:0;overflow-x:auto}
.cols>section.wide{flex:3 1 640px}
tr.hit td{background:#fff3c4}tr.chain td:first-child{border-left:4px solid var(--red)}
.chips a,.chips span{display:inline-block;margin:2px 4px 2px 0;padding:1px 8px;border-radius:10px;
border:1px solid var(--line);background:#fff;color:var(--fg);text-decoration:none;font-size:12px}
.chips .on{background:var(--blubg);border-color:var(--blu);color:var(--blu);font-weight:600}
.chips b{font-size:12px;color:var(--mut);margin-right:4px}.note{color:var(--mut);font-size:12px;margin:4px 0 10px}
.bound{background:var(--blubg);border-left:4px solid var(--blu);padding:8px 12px;margin:0 0 16px;font-size:13px}
header a{color:#b9c2d3}form.find{float:right;margin-top:-34px}form.find input{padding:3px 6px}
svg{background:#fff;border:1px solid var(--line)}td.id code{font-size:11px}td.t{white-space:nowrap}
"""
CSP = ("default-src 'none'; style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
       + "'; img-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "x-frame-options": "DENY", "cache-control": "no-store"}


def h(tag_name: str, /, *children: Any, **attrs: Any) -> Markup:
    """An element; str children and every attribute value are escaped, Markup children kept.
    Parts are joined as plain strings and marked safe once (Markup per part was most of the cost)."""
    a = "".join(f' {_name(k)}="{escape(v)}"' for k, v in attrs.items() if v is not None and v is not False)
    if tag_name in _VOID:
        return Markup(f"<{tag_name}{a}>")
    return Markup(f"<{tag_name}{a}>{''.join(_flat(children))}</{tag_name}>")


@functools.lru_cache(maxsize=256)
def _name(key: str) -> str:
    return key.rstrip("_").replace("_", "-")


def _flat(children: Iterable[Any]) -> Iterable[str]:
    for c in children:
        if c is None or c is False:
            continue
        if isinstance(c, Markup):
            yield c
        elif isinstance(c, (list, tuple)):
            yield from _flat(c)
        else:
            text = str(c)
            yield escape(text if text.isprintable() else visible(text))


def caller_url(caller: str, **query: str) -> str:
    q = {k: v for k, v in query.items() if v}
    return "/callers/" + quote(caller, safe="") + ("?" + urlencode(q) if q else "")


def _t(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _badge(text: str, colour: str = "gry", title: str | None = None) -> Markup:
    return h("span", text, class_=f"b {colour}", title=title)


def _verdict(s: Step) -> Markup:
    if s.verdict == "allow":
        return _badge("allow", "grn")
    if s.verdict == "monitor":
        return _badge("deny (monitor: let through)", "amb")
    return _badge("DENY", "red")


def _stage(stage: str | None) -> Markup | str:
    return _badge(stage, _STAGE_COLOUR.get(stage, "gry")) if stage else "-"


def _who(caller: str) -> str:
    parts = caller.split("|")
    return parts[1] if len(parts) == 3 else caller


def _table(headers: list[str], rows: list[Markup], empty: str, **attrs: Any) -> Markup:
    if not rows:
        return h("p", empty, class_="empty")
    return h("table", h("thead", h("tr", [h("th", x) for x in headers])), h("tbody", rows), **attrs)


def _chart(v: ActorView, width: int = 560, height: int = 120) -> Markup:
    """Points added over time (before decay) as a step line, alerts as red dots; inline SVG."""
    pts = [(s.time, s.score) for s in v.steps if s.time]
    if len(pts) < 2:
        return h("p", "not enough kept decisions to draw", class_="empty")
    t0, t1 = pts[0][0], pts[-1][0]
    top = max(max(p[1] for p in pts), v.block_at or 0.0, 1.0)

    def xy(t: float, y: float) -> tuple[float, float]:
        return (10 + (width - 20) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0), height - 10 - (height - 20) * y / top)

    d, prev = [], None
    for t, y in pts:
        x, yy = xy(t, y)
        d.append(f"M{x:.1f},{yy:.1f}" if prev is None else f"H{x:.1f}V{yy:.1f}")
        prev = yy
    parts = [h("path", d=" ".join(d), fill="none", stroke="#1f4e99", stroke_width="2")]
    if v.block_at:
        _, yb = xy(t0, v.block_at)
        parts.append(h("line", x1="10", x2=str(width - 10), y1=f"{yb:.1f}", y2=f"{yb:.1f}", stroke="#b3261e",
                       stroke_dasharray="4 3"))
    for s in v.steps:
        if any(c.endswith(": extract") for c in s.chain) and s.time:
            x, yy = xy(s.time, s.score)
            parts.append(h("circle", cx=f"{x:.1f}", cy=f"{yy:.1f}", r="4", fill="#b3261e"))
    return h("svg", parts, width=str(width), height=str(height), viewBox=f"0 0 {width} {height}", role="img",
             aria_label="risk points over time")


def _chips(v: ActorView, key: str, label: str) -> Markup:
    f = v.filters
    current = {"session": f.session, "server": f.server, "verdict": f.verdict, "stage": f.stage,
               "user": f.user_session}[key]
    items = [h("b", label)]
    items.append(h("a", "all", href=caller_url(v.caller, **f.query(**{key: ""})), class_=None if current else "on"))
    for value, n in sorted(v.facets.get(key, {}).items()):
        items.append(h("a", f"{value} ({n})", href=caller_url(v.caller, **f.query(**{key: value})),
                       class_="on" if value == current else None))
    if current and current not in v.facets.get(key, {}):
        items.append(h("span", f"{current} (0)", class_="on"))
    return h("div", items, class_="chips")


def _step_row(s: Step, v: ActorView) -> Markup:
    cls = " ".join(x for x in ("hit" if s.decision_id == v.filters.decision else "",
                               "chain" if s.chain else "") if x) or None
    return h("tr",
             h("td", _t(s.time), class_="t"),
             h("td", h("a", s.session_id, href=caller_url(v.caller, **v.filters.query(session=s.session_id)))
               if s.session_id else h("span", "no session", class_="mut"),
               h("div", s.user_session, class_="mut") if s.user_session else None),
             h("td", h("code", s.server)), h("td", s.method), h("td", h("code", s.name) if s.name else "-"),
             h("td", _verdict(s)),
             h("td", h("code", s.reason), h("div", s.detail[:200], class_="desc") if s.detail else None),
             h("td", _stage(s.stage), f" +{s.points:g}" if s.points else None,
               [h("div", _badge(c, "red")) for c in s.chain], _forgiveness(s)),
             h("td", str(s.worker) if s.worker is not None else s.replica or "-", class_="num"),
             h("td", h("a", h("code", s.decision_id), href=f"#d-{s.decision_id}"), class_="id"),
             id=f"d-{s.decision_id}", class_=cls, data_stage=s.stage or "none", data_verdict=s.verdict)


def _forgiveness(s: Step) -> Markup | None:
    """A corrected mistake and its correction, linked to each other (the points were refunded)."""
    if s.forgiven_by:
        return h("div", _badge("forgiven", "grn", "corrected by a later allowed call: its points were refunded"),
                 " by ", h("a", h("code", s.forgiven_by), href=f"#d-{s.forgiven_by}"), class_="mut")
    if s.forgives:
        return h("div", "corrects ", [h("a", h("code", d + " "), href=f"#d-{d}") for d in s.forgives],
                 class_="mut")
    return None


def render(v: ActorView) -> str:
    b = v.bounds
    total = b.allowed + b.denied
    cards = h("div", [
        h("div", h("b", f"{v.score:.0f}"), h("span", f"risk score (blocks at {v.block_at:.0f})"),
          class_="card bad" if v.blocked else "card warn" if v.alerts else "card"),
        h("div", h("b", "BLOCKED" if v.blocked else "no"), h("span", "blocked now"),
          class_="card bad" if v.blocked else "card"),
        h("div", h("b", str(len(v.alerts))), h("span", "alerts"), class_="card bad" if v.alerts else "card"),
        h("div", h("b", str(len(v.mcp_sessions))), h("span", "MCP sessions"), class_="card"),
        h("div", h("b", str(len(v.user_sessions))), h("span", "user sessions"), class_="card"),
        h("div", h("b", str(total)), h("span", f"decisions in total ({b.denied} denied)"), class_="card"),
    ], class_="cards")
    per = f" per process ({b.processes} processes)" if b.processes > 1 else ""
    bound = h("div", "What is kept: the last ", h("b", str(b.timeline_length)), " decisions of each caller on its "
              "risk timeline, and the last ", h("b", str(b.decision_ring)), f" decisions of the whole service in the "
              f"decision log{per}. This caller made ", h("b", str(total)), f" decisions in total ({b.allowed} allowed, "
              f"{b.denied} denied); ", h("b", str(b.kept)), " are kept, ", h("b", str(b.shown)),
              " shown with these filters." + (" Older ones are counted in the totals only." if total > b.kept else ""),
              h("div", "Over every replica (Redis): the last ", h("b", str(b.shared)), " decisions of each caller, "
                "whichever replica made them.") if b.shared else None,
              h("div", h("b", "Partial: "), b.partial, class_="alert") if b.partial else None,
              [h("div", h("b", "Incomplete: "), f"{m} did not answer; its decisions are missing.", class_="alert")
               for m in b.missing], class_="bound")

    identity = _table(["issuer", "subject", "client id", "groups seen", "caller key"], [h(
        "tr", h("td", v.issuer or "-"), h("td", v.subject), h("td", v.client_id or "-"),
        h("td", [_badge(g, "blu") for g in v.groups] or "-"), h("td", h("code", v.caller)))], "")

    alerts = []
    for a in v.alerts:
        rows = [h("tr", h("td", str(n)), h("td", _stage(st.stage)), h("td", _t(st.time), class_="t"),
                  h("td", h("code", st.session_id) if st.session_id else "-"), h("td", h("code", st.reason)),
                  h("td", st.method, " ", h("code", st.name) if st.name else None),
                  h("td", h("a", h("code", st.decision_id), href=f"#d-{st.decision_id}") if st.on_page
                    else h("span", h("code", st.decision_id), " (no longer kept)", class_="mut")))
                for n, st in enumerate(a.steps, 1)]
        alerts.append(h("div", h("b", f"Alert {a.index}: attack chain "), f"at {_t(a.time)} (+{a.points:g} points)",
                        h("div", a.summary, class_="mut"),
                        h("div", "sessions: ", [h("code", s + " ") for s in a.sessions]),
                        _table(["step", "stage", "time", "MCP session", "reason", "call", "decision"], rows, ""),
                        class_="alert", id=f"alert-{a.index}"))
    if v.chain:
        alerts.append(h("p", "chain in progress: " + " -> ".join(v.chain), class_="note"))

    user_rows = [h("tr", h("td", h("a", h("code", u.user_session), href=caller_url(v.caller, user=u.user_session))
                           if u.user_session else h("span", "(no sid claim)", class_="mut")),
                   h("td", [h("div", h("code", m) if m else h("span", "outside any MCP session", class_="mut"))
                            for m in u.mcp_sessions]),
                   h("td", _t(u.first_seen)), h("td", _t(u.last_seen)), h("td", str(u.steps), class_="num"))
                 for u in v.user_sessions]
    mcp_rows = []
    for m in v.mcp_sessions:
        owner = _badge("bound to this caller", "grn") if m.owner == v.caller else \
            _badge(f"owned by {_who(m.owner)}", "red", m.owner) if m.owner else \
            _badge(f"ended {_t(m.ended)}", "gry", "ended by DELETE: no longer registered") if m.ended else \
            _badge("expired or never bound", "gry")
        mcp_rows.append(h("tr",
                          h("td", h("a", h("code", m.session_id), href=caller_url(v.caller, session=m.session_id)),
                            h("div", owner)),
                          h("td", [h("div", h("code", u)) for u in m.user_sessions] or "-"),
                          h("td", m.protocol_version or "-"), h("td", [h("div", h("code", s)) for s in m.servers]),
                          h("td", _t(m.first_seen)), h("td", _t(m.last_seen)),
                          h("td", f"{m.steps} kept", h("div", f"{m.denied} denied", class_="mut")),
                          h("td", [h("div", h("a", _badge(_who(p.caller), "red", p.caller), href=caller_url(p.caller)),
                                         " ", h("code", p.reason), " ",
                                         _t(p.time)) for p in m.others] or h("span", "nobody", class_="mut")),
                          data_session=m.session_id))

    f = v.filters
    step_rows = [_step_row(s, v) for s in v.steps]
    timeline = h("section", h("h2", "Timeline"),
                 h("p", "Every decision kept, oldest first. Rows with a red edge are steps of an alert's chain.",
                   class_="note"),
                 _chips(v, "verdict", "verdict"), _chips(v, "stage", "stage"), _chips(v, "server", "server"),
                 _chips(v, "session", "MCP session"), _chips(v, "user", "user session"),
                 h("p", h("a", "clear filters", href=caller_url(v.caller))) if f.active() else None,
                 _table(["time", "session", "server", "method", "name", "verdict", "reason", "stage / chain",
                         "worker", "decision id"], step_rows, "no decision matches these filters", class_="timeline"),
                 id="timeline")

    head = [h("meta", charset="utf-8"), h("title", f"Actor {v.subject} \u2014 mcp-extauthz"),
            Markup(f"<style>{CSS}</style>")]
    body = [
        h("header", h("h1", "Actor ", h("code", v.subject)),
          h("p", h("a", "inventory", href="/inventory"), f" \u00b7 generated {_t(v.generated)} UTC \u00b7 ",
            h("code", v.caller)),
          h("form", h("input", type="search", name="q", placeholder="subject, client, session, sid, decision id"),
            h("input", type="submit", value="find"), action="/callers", method="get", class_="find")),
        h("main", cards, bound,
          h("section", h("h2", "Identity"), identity, id="identity"),
          h("section", h("h2", "Risk score over time"), _chart(v),
            h("p", f"Points each decision added, summed before decay (blue; red dots: a chain completed, "
                   f"dashed: block threshold {v.block_at:.0f}; a forgiven mistake adds nothing, its points were "
                   f"refunded). Score now, after decay: {v.score:.1f}.",
              class_="note"), id="risk"),
          h("section", h("h2", "Alerts"), alerts or h("p", "no alert", class_="empty"), id="alerts"),
          h("div",
            h("section", h("h2", "User sessions"), _table(["user session (sid)", "opened MCP sessions", "first seen",
                                                            "last seen", "kept"], user_rows, "none"),
              id="user-sessions"),
            h("section", h("h2", "MCP sessions"), _table(["MCP session", "user session", "protocol", "servers",
                                                           "first seen", "last seen", "decisions",
                                                           "who else presented it"], mcp_rows, "none"),
              id="mcp-sessions", class_="wide"),
            class_="cols"),
          timeline),
    ]
    return "<!doctype html>" + str(h("html", h("head", head), h("body", body), lang="en"))


def render_matches(query: str, hits: list[Any]) -> str:
    """The search result when a query names no single actor."""
    rows = [h("tr", h("td", h("a", _who(x.caller), href=caller_url(x.caller, decision=x.decision_id)
                              + (f"#d-{x.decision_id}" if x.decision_id else ""))),
              h("td", h("code", x.caller)), h("td", x.via)) for x in hits]
    body = [h("header", h("h1", "Find an actor"), h("p", h("a", "inventory", href="/inventory")),
              h("form", h("input", type="search", name="q", value=query), h("input", type="submit", value="find"),
                action="/callers", method="get", class_="find")),
            h("main", h("p", f"{len(hits)} actor(s) match ", h("code", query) if query else "(nothing)",
                        f" (only the first {MAX_HITS} are listed)" if len(hits) >= MAX_HITS else None),
              _table(["actor", "caller key", "matched by"], rows, "no actor matches"))]
    head = [h("meta", charset="utf-8"), h("title", "Find an actor \u2014 mcp-extauthz"),
            Markup(f"<style>{CSS}</style>")]
    return "<!doctype html>" + str(h("html", h("head", head), h("body", body), lang="en"))


__all__ = ["CSP", "HEADERS", "STAGES", "Filters", "caller_url", "h", "render", "render_matches"]
