"""The actor view (issue 18): the view model built from one process's facts, finding the actor,
the page and its escaping, `/v1/callers/{id}`, `/v1/investigate`, the text of `extauthz
investigate`, and merging the facts of several workers."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from extauthz.admin.actor_page import CSP, render
from extauthz.admin.actor_view import Filters, build, parse_duration
from extauthz.admin.actors import LocalActors, find, gather, merge
from extauthz.admin.http import build_admin
from extauthz.admin.investigate_cli import print_actor
from extauthz.app import App
from extauthz.decisionlog import RecentDecisions
from extauthz.mcp.request import HttpRequest
from extauthz.shared.changes import RiskEvent

POLICY = Path(__file__).parent.parent / "risk" / "policy.yaml"
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}
TOOLS = [{"name": n, "inputSchema": SCHEMA} for n in ("open_tool", "export_data", "admin_only")]
ISS = "https://issuer"
EVE = f"{ISS}|eve|agent"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>\x1b[31m\u202e'


def claims(sub: str, sid: str | None = None, client: str = "agent") -> dict[str, Any]:
    c: dict[str, Any] = {"iss": ISS, "sub": sub, "groups": ["support"], "client_id": client}
    if sid:
        c["sid"] = sid
    return c


def check(app: App, name: str, args: Any = None, *, who: dict[str, Any], session: str = "",
          method: str = "tools/call") -> Any:
    headers = {"content-type": "application/json"}
    if session:
        headers["mcp-session-id"] = session
    params = {"name": name, "arguments": args if args is not None else {}} if method == "tools/call" else {}
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    return app.check(HttpRequest(method="POST", path="/mcp", authority="crm.example.com", headers=headers, body=body,
                                 partial=False, metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": who}}))


def new_app(tmp_path: Path, extra: str = "") -> App:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.read_text().replace("blockAt: 30", "blockAt: 200") + extra)
    a = App(str(p), decision_out=io.BytesIO())
    a.specs.apply_page("crm", "tools", TOOLS, first=True, last=True)
    return a


def attack(app: App) -> dict[str, list[str]]:
    """A chain under the calibrated rules (extauthz.risk.chain): s1 (user session u1) opens with the
    listing every client does (no stage) and guesses names (recon), s2 (u1) tests the schema and the
    ACL (probe): six distinct denials worth 42 points within minutes; s3 (u2) extracts. The decision
    ids by group: start (not evidence), recon, probe, extract."""
    u1, u2 = claims("eve", "u1"), claims("eve", "u2")
    ids: dict[str, list[str]] = {"start": [], "recon": [], "probe": [], "extract": []}
    ids["start"].append(check(app, "", who=u1, session="s1", method="tools/list").decision_id)
    for n in ("nope_1", "nope_2", "nope_3"):
        ids["recon"].append(check(app, n, who=u1, session="s1").decision_id)
    for args in ({"q": 5}, {"q": "x", "extra": True}):
        ids["probe"].append(check(app, "open_tool", args, who=u1, session="s2").decision_id)
    ids["probe"].append(check(app, "admin_only", {"q": "x"}, who=u1, session="s2").decision_id)
    ids["extract"].append(check(app, "export_data", {"q": "all"}, who=u2, session="s3").decision_id)
    return ids


def test_the_view_shows_sessions_side_by_side_and_the_chain_in_order(tmp_path):
    app = new_app(tmp_path)
    ids = attack(app)
    check(app, "open_tool", {"q": "hi"}, who=claims("mallory", "m1"), session="s1")   # a stolen session id
    v = build(gather(app, EVE))
    assert (v.subject, v.issuer, v.client_id, v.groups) == ("eve", ISS, "agent", ("support",))
    assert [s.decision_id for s in v.steps] == [*ids["start"], *ids["recon"], *ids["probe"], *ids["extract"]]
    (alert,) = v.alerts
    assert [s.decision_id for s in alert.steps] == [*ids["recon"], *ids["probe"], *ids["extract"]]
    assert [(s.stage, s.decision_id) for s in alert.steps][-1] == ("extract", ids["extract"][0])
    assert [s.stage for s in alert.steps] == sorted((s.stage for s in alert.steps), key=("recon", "probe",
                                                                                         "extract").index)
    assert set(alert.sessions) == {"s1", "s2", "s3"}
    marked = {s.decision_id: s.chain for s in v.steps if s.chain}
    assert marked[ids["extract"][0]] == ("alert 1: extract",)
    assert all(marked[d] == ("alert 1: probe",) for d in ids["probe"])
    assert all(marked[d] == ("alert 1: recon",) for d in ids["recon"])
    (listing,) = [s for s in v.steps if s.decision_id == ids["start"][0]]
    assert listing.stage is None and listing.points == 0 and not listing.chain    # listing is not recon
    assert v.chain == ()                       # the alert used the evidence: no chain in progress
    # user sessions: u1 opened s1 and s2, u2 opened s3
    users = {u.user_session: u.mcp_sessions for u in v.user_sessions}
    assert users == {"u1": ("s1", "s2"), "u2": ("s3",)}
    by_id = {m.session_id: m for m in v.mcp_sessions}
    assert set(by_id) == {"s1", "s2", "s3"}
    assert (by_id["s1"].owner, by_id["s2"].owner, by_id["s3"].owner) == (EVE, "", EVE)   # s2: denials only, never bound
    assert by_id["s2"].denied == 3 and by_id["s3"].servers == ("crm",)
    (other,) = by_id["s1"].others
    assert other.caller == f"{ISS}|mallory|agent" and other.reason == "session_hijack"
    # the score over time only grows, and the chain's completion adds its points
    scores = [s.score for s in v.steps]
    assert scores == sorted(scores) and scores[-1] - scores[-2] == alert.points
    assert v.bounds.kept == v.bounds.shown == 8 and v.bounds.allowed + v.bounds.denied == 8


@pytest.mark.parametrize("query, expect", [
    ({"session": "s2"}, ["open_tool", "open_tool", "admin_only"]),
    ({"verdict": "allow"}, ["", "export_data"]),
    ({"stage": "extract"}, ["export_data"]),
    ({"stage": "recon", "session": "s1"}, ["nope_1", "nope_2", "nope_3"]),
    ({"stage": "none"}, [""]),           # the listing at session start
    ({"user": "u2"}, ["export_data"]),
    ({"server": "crm", "verdict": "deny"}, ["nope_1", "nope_2", "nope_3", "open_tool", "open_tool", "admin_only"]),
    ({"verdict": "maybe"}, []),          # an unknown value filters to nothing, never to everything
    ({"since": "1h"}, ["", "nope_1", "nope_2", "nope_3", "open_tool", "open_tool", "admin_only", "export_data"]),
], ids=["session", "verdict", "stage", "stage+session", "stage-none", "user-session", "server+verdict",
        "unknown-value", "since"])
def test_filters(tmp_path, query, expect):
    app = new_app(tmp_path)
    attack(app)
    v = build(gather(app, EVE), Filters.from_query(query))
    assert [s.name for s in v.steps] == expect
    assert v.bounds.kept == 8 and v.bounds.shown == len(expect)


def test_since_cuts_old_steps_and_durations_parse():
    assert [parse_duration(x) for x in ("90", "90s", "15m", "2h", "1d")] == [90, 90, 900, 7200, 86400]
    with pytest.raises(ValueError):
        parse_duration("soon")
    facts = {"caller": EVE, "timeline": [
        {"time": 1000.0, "decisionId": "a" * 32, "sessionId": "", "server": "crm", "method": "tools/call", "name": "old",
         "reason": "allowed", "stage": None, "points": 0.0},
        {"time": 1950.0, "decisionId": "b" * 32, "sessionId": "", "server": "crm", "method": "tools/call",
         "name": "new", "reason": "allowed", "stage": None, "points": 0.0}]}
    assert [s.name for s in build(facts, Filters(since=60), now=2000.0).steps] == ["new"]


def test_bounds_are_stated_and_totals_go_beyond_them(tmp_path):
    app = new_app(tmp_path, "".join([]))
    app.risk.configure(block_at=200, decay_per_minute=1, enabled=True, volume_per_minute=100, timeline=5,
                       max_callers=100)
    app.decisions.recent = RecentDecisions(4)
    for i in range(12):
        check(app, "open_tool", {"q": str(i)}, who=claims("eve"))
    v = build(gather(app, EVE))
    b = v.bounds
    assert (b.timeline_length, b.decision_ring, b.allowed, b.denied) == (5, 4, 12, 0)
    assert b.kept == 5 < 12                    # the newest five: ring and timeline overlap
    page = render(v)
    assert re.search(r"the last <b>5</b> decisions of each caller", page)
    assert "made <b>12</b> decisions in total" in page and "counted in the totals only" in page


def test_find_by_every_kind_of_id(tmp_path):
    app = new_app(tmp_path)
    ids = attack(app)
    check(app, "open_tool", {"q": "x"}, who=claims("carol", client="other-client"))
    for q, via in (("eve", "subject"), ("s2", "session"), ("u2", "userSession"), (EVE, "caller"),
                   (ids["probe"][1], "decision")):
        hits = find(app, q)
        assert [(h.caller, h.via) for h in hits] == [(EVE, via)], q
    assert [h.caller for h in find(app, "other-client")] == [f"{ISS}|carol|other-client"]
    assert find(app, ids["probe"][1])[0].decision_id == ids["probe"][1]
    assert find(app, "") == [] and find(app, "nobody") == []
    # a decision no longer in the decision ring is still found on the timeline
    app.decisions.recent = RecentDecisions(1)
    assert [h.caller for h in find(app, ids["recon"][1])] == [EVE]


def hostile_app(tmp_path: Path) -> tuple[App, str]:
    app = new_app(tmp_path)
    who = {**claims(HOSTILE, "sid<b>x</b>"), "groups": [HOSTILE]}
    check(app, HOSTILE, who=who, session='"><b>s</b>')            # unknown name: recon
    check(app, "open_tool", {"q": 1}, who=who, session='"><b>s</b>')
    check(app, "export_data", {"q": HOSTILE}, who=who)
    return app, f"{ISS}|{HOSTILE}|agent"


def test_hostile_names_subjects_and_session_ids_stay_inert(tmp_path):
    app, key = hostile_app(tmp_path)
    v = build(gather(app, key))
    assert v.subject == HOSTILE and len(v.steps) == 3
    page = render(v)
    assert "<script" not in page and "<img" not in page and "<b>s</b>" not in page and "<b>x</b>" not in page
    assert "onerror=alert(2)" not in page.replace("onerror=alert(2)&gt;", "")   # only as escaped text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\u202e" not in page
    assert "\u27e8U+001B\u27e9" in page and "\u27e8U+202E\u27e9" in page
    # every tag on the page is one the renderer wrote
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "a", "code",
                    "form", "input", "main", "div", "b", "span", "section", "table", "thead", "tbody", "tr", "th",
                    "td", "svg", "path", "line", "circle", "br"}, tags
    # the text of `extauthz investigate` carries no terminal control either
    out = io.StringIO()
    print_actor(v.as_json(), out)
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue() and "\\x1b" in out.getvalue()


def test_the_page_json_and_search_over_http(tmp_path):
    app = new_app(tmp_path)
    ids = attack(app)
    c = TestClient(build_admin(app))
    r = c.get("/callers/eve", follow_redirects=False)               # by subject: to the actor's own URL
    assert r.status_code == 303 and r.headers["location"] == "/callers/https%3A%2F%2Fissuer%7Ceve%7Cagent"
    page = c.get(r.headers["location"])
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "script-src" not in CSP
    assert all(f'id="d-{d}"' in page.text for ds in ids.values() for d in ds)
    step = ids["probe"][0]
    r = c.get(f"/callers/{step}", follow_redirects=False)            # a decision id: the actor and the step
    assert r.status_code == 303 and r.headers["location"].endswith(f"?decision={step}#d-{step}")
    landed = c.get(r.headers["location"]).text
    assert re.search(rf'<tr id="d-{step}" class="hit chain"', landed)
    assert c.get("/callers?q=u2", follow_redirects=False).status_code == 303
    assert c.get("/callers/nobody").status_code == 404
    doc = c.get("/v1/investigate", params={"q": "s3"}).json()
    assert doc["matches"] == [{"caller": EVE, "via": "session", "decisionId": ""}]
    assert [s["decision_id"] for s in doc["actor"]["steps"]] == [d for ds in ids.values() for d in ds]
    assert c.get("/v1/investigate", params={"q": "nobody"}).status_code == 404
    assert c.get("/v1/investigate", params={"q": "eve", "since": "soon"}).status_code == 400
    j = c.get(f"/v1/callers/{EVE}", params={"stage": "probe"}).json()
    assert [s["reason"] for s in j["steps"]] == ["schema_violation", "schema_violation", "not_allowed"]
    check(app, "open_tool", {"q": "x"}, who=claims("eve", client="second"))   # a second caller named eve
    r = c.get("/v1/callers/eve")
    assert r.status_code == 409 and len(r.json()["matches"]) == 2
    inventory = c.get("/inventory").text
    assert 'href="/callers/https%3A%2F%2Fissuer%7Ceve%7Cagent"' in inventory


def test_merge_of_two_workers_dedupes_and_names_a_missing_one(tmp_path):
    one, two = new_app(tmp_path), new_app(tmp_path)
    a = check(one, "nope_1", who=claims("eve", "u1"), session="s1")
    b = check(two, "open_tool", {"q": "x"}, who=claims("eve", "u1"), session="s1")
    # worker two got worker one's scored event relayed (as the bus does)
    two.risk.apply(RiskEvent(EVE, two.risk.clock.time(), a.decision_id, "s1", "crm", "tools/call", "nope_1",
                             "unknown_capability", "recon", 6.0))
    facts = merge([gather(one, EVE, 0), gather(two, EVE, 1)], ["worker 2"])
    v = build(facts)
    assert [(s.decision_id, s.worker) for s in v.steps] == [(a.decision_id, 0), (b.decision_id, 1)]
    assert v.bounds.processes == 2 and v.bounds.missing == ("worker 2",)
    assert "worker 2</b>" not in render(v) and "worker 2 did not answer" in render(v)
    assert asyncio.run(LocalActors(one).find("s1"))[0].caller == EVE


def test_replay_summary_ends_with_the_actor_view(tmp_path):
    from extauthz.replay import summary
    app = new_app(tmp_path)
    attack(app)
    (actor,) = summary(app)["actors"]
    assert actor["caller"] == EVE and "steps" not in actor
    assert {u["user_session"] for u in actor["user_sessions"]} == {"u1", "u2"}
    assert [s["stage"] for s in actor["alerts"][0]["steps"]][-1] == "extract"


def test_a_corrected_mistake_is_shown_forgiven_and_the_chain_in_progress(tmp_path):
    app = new_app(tmp_path)
    eve = claims("eve", "u1")
    slip = check(app, "open_tool", {"q": 5}, who=eve, session="s1").decision_id        # "5" for a string
    fixed = check(app, "open_tool", {"q": "5"}, who=eve, session="s1").decision_id
    guess = check(app, "nope_1", who=eve, session="s1").decision_id                    # recon, not forgiven
    v = build(gather(app, EVE))
    by = {s.decision_id: s for s in v.steps}
    assert (by[slip].stage, by[slip].points, by[slip].forgiven_by) == ("probe", 0.0, fixed)
    assert by[fixed].forgives == (slip,) and not by[fixed].forgiven_by
    assert (by[guess].points, by[guess].forgiven_by) == (6.0, "")
    # the score over time counts the forgiven mistake as nothing (its points were refunded)
    assert [s.score for s in v.steps] == [0.0, 0.0, 6.0]
    # the forgiven probe is no longer evidence: the chain in progress is the guess alone
    assert v.chain == ("recon",)
    page = render(v)
    row = page.split(f'<tr id="d-{slip}"', 1)[1].split("</tr>", 1)[0]
    assert "forgiven" in row and f'href="#d-{fixed}"' in row
    row = page.split(f'<tr id="d-{fixed}"', 1)[1].split("</tr>", 1)[0]
    assert "corrects" in row and f'href="#d-{slip}"' in row
    assert "chain in progress: recon" in page
    out = io.StringIO()
    print_actor(v.as_json(), out)
    (line,) = [x for x in out.getvalue().splitlines() if x.rstrip().endswith(slip)]
    assert f"forgiven by {fixed}" in line
    assert "chain in progress: recon" in out.getvalue()


def test_merged_workers_keep_the_copy_that_knows_of_the_correction(tmp_path):
    one, two = new_app(tmp_path), new_app(tmp_path)
    eve = claims("eve", "u1")
    slip = check(one, "open_tool", {"q": 5}, who=eve, session="s1").decision_id
    # worker two got the mistake relayed before worker one saw the correction
    two.risk.apply(RiskEvent(EVE, two.risk.clock.time(), slip, "s1", "crm", "tools/call", "open_tool",
                             "schema_violation", "probe", 8.0))
    fixed = check(one, "open_tool", {"q": "5"}, who=eve, session="s1").decision_id
    for parts in ([gather(two, EVE, 1), gather(one, EVE, 0)], [gather(one, EVE, 0), gather(two, EVE, 1)]):
        (step,) = [s for s in build(merge(parts)).steps if s.decision_id == slip]
        assert (step.points, step.forgiven_by) == (0.0, fixed)
