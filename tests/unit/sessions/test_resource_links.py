"""Resource links a tool returned (extauthz.sessions.links): readable in the session (stateless: by
the caller) they were returned to, resource rules still applied; nowhere else, never before the
result was read, never after the grant expired; results of tools that may return links are read on
the learn route (Envoy waits), the others stay sampled."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.envoy.convert import to_check_response
from extauthz.mcp.request import HttpRequest
from extauthz.sessions import links as L
from extauthz.sessions.links import LinkGrants, links_in

HERE = Path(__file__).parent
POLICY = HERE / "policy.yaml"
ALICE = {"iss": "https://issuer", "sub": "alice", "groups": ["support"], "client_id": "agent"}
BOB = {"iss": "https://issuer", "sub": "bob", "groups": ["support"], "client_id": "agent"}
NOGROUP = {"iss": "https://issuer", "sub": "carol", "groups": [], "client_id": "agent"}
ALICE_KEY = "https://issuer|alice|agent"
LINK = "crm://customers/c-100-export.csv.gz"
OTHER_LINK = "crm://orders/o-7-export.json"


def link(uri: str) -> dict[str, Any]:
    return {"type": "resource_link", "uri": uri, "name": uri.rsplit("/", 1)[-1], "mimeType": "application/gzip"}


# -- extracting links -------------------------------------------------------------------------------------

def test_links_in_takes_clean_resource_links_only() -> None:
    result = {"content": [{"type": "text", "text": "done"}, link(LINK), link(LINK), link("crm://a/../b"),
                          link("crm://a/%2e%2e/b"), {"type": "resource_link"}, "junk", link(OTHER_LINK)]}
    assert links_in(result) == [LINK, OTHER_LINK]
    assert links_in({**result, "isError": True}) == []
    assert links_in({"content": "x"}) == [] and links_in(None) == []
    many = {"content": [link(f"crm://x/{i}") for i in range(L.MAX_PER_RESULT + 10)]}
    assert len(links_in(many)) == L.MAX_PER_RESULT


# -- the store ------------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_tool_is_read_until_it_proved_link_free_and_for_good_once_it_returned_one() -> None:
    g = LinkGrants()
    for _ in range(L.PROVE):
        assert g.wants("crm", "lookup")
        g.observed("crm", "s1", ALICE_KEY, "lookup", {"content": [{"type": "text", "text": "x"}]})
    assert not g.wants("crm", "lookup")
    # a later (sampled) observation finds a link: from now on every call is read
    g.observed("crm", "s1", ALICE_KEY, "lookup", {"content": [link(LINK)]})
    assert g.wants("crm", "lookup")
    for _ in range(10):
        g.observed("crm", "s1", ALICE_KEY, "lookup", {"content": []})
    assert g.wants("crm", "lookup")


def test_grants_are_per_server_session_and_caller_and_expire() -> None:
    clock = Clock()
    g = LinkGrants(ttl=60, clock=clock)
    g.grant("crm", "s1", ALICE_KEY, [LINK])
    assert g.granted(g.view("crm", "s1", ALICE_KEY), LINK)
    assert not g.granted(g.view("crm", "s1", ALICE_KEY), OTHER_LINK)
    assert not g.granted(g.view("crm", "s2", ALICE_KEY), LINK)
    assert not g.granted(g.view("crm", "s1", "https://issuer|bob|agent"), LINK)
    assert not g.granted(g.view("other", "s1", ALICE_KEY), LINK)
    assert not g.granted(g.view("crm", "", ALICE_KEY), LINK)          # the caller's stateless calls
    clock.now += 61
    assert not g.granted(g.view("crm", "s1", ALICE_KEY), LINK)


def test_grants_are_bounded_per_partition_and_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    g = LinkGrants()
    g.grant("crm", "s1", ALICE_KEY, [f"crm://x/{i}" for i in range(L.MAX_PER_PARTITION + 5)])
    part = g.view("crm", "s1", ALICE_KEY)
    assert len(g) == L.MAX_PER_PARTITION
    assert not g.granted(part, "crm://x/0") and g.granted(part, f"crm://x/{L.MAX_PER_PARTITION + 4}")
    monkeypatch.setattr(L, "MAX_GRANTS", 3 * L.MAX_PER_PARTITION)
    for s in ("s2", "s3", "s4"):
        g.grant("crm", s, ALICE_KEY, [f"crm://y/{i}" for i in range(L.MAX_PER_PARTITION)])
    assert len(g) <= L.MAX_GRANTS
    assert g.view("crm", "s1", ALICE_KEY) is None                      # the oldest partition went
    assert g.granted(g.view("crm", "s4", ALICE_KEY), "crm://y/0")


def test_no_caller_no_grant() -> None:
    g = LinkGrants()
    g.grant("crm", "s1", "-", [LINK])
    g.grant("crm", "s1", "", [LINK])
    assert len(g) == 0


# -- through App.check and the learn exchange -------------------------------------------------------------

def make_app(tmp_path: Path, extra: str = "") -> App:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.read_text() + extra)
    a = App(str(p), decision_out=io.BytesIO())
    a.specs.apply_page("crm", "tools", [{"name": "open_tool", "inputSchema": {"type": "object"}}],
                       first=True, last=True)
    a.specs.apply_page("crm", "resources", [{"uri": "crm://reports/summary", "name": "summary"}],
                       first=True, last=True)
    return a


@pytest.fixture
def app(tmp_path: Path) -> App:
    return make_app(tmp_path)


def check(app: App, msg: dict[str, Any], *, session: str | None, claims: dict[str, Any] = ALICE) -> Decision:
    headers = {"content-type": "application/json"}
    if session is not None:
        headers["mcp-session-id"] = session
    return app.check(HttpRequest(method="POST", path="/mcp", authority="crm.example.com", headers=headers,
                                 body=orjson.dumps(msg), partial=False,
                                 metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}}))


def call(app: App, *, session: str | None, claims: dict[str, Any] = ALICE, mid: Any = 1) -> Decision:
    return check(app, {"jsonrpc": "2.0", "id": mid, "method": "tools/call",
                       "params": {"name": "open_tool", "arguments": {}}}, session=session, claims=claims)


def read(app: App, uri: str, *, session: str | None, claims: dict[str, Any] = ALICE) -> Decision:
    return check(app, {"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": uri}},
                 session=session, claims=claims)


def route_of(d: Decision) -> tuple[str, str | None]:
    """Which Envoy route the allowed call takes, and the header value ext_proc will see."""
    resp = to_check_response(d)
    h = {o.header.key: o.header.value for o in resp.ok_response.headers}
    if "x-mcp-extauthz-learn" in h:
        return "learn", h["x-mcp-extauthz-learn"]
    if "x-mcp-extauthz-observe" in h:
        return "observe", h["x-mcp-extauthz-observe"]
    return "default", None


def answer(app: App, d: Decision, result: dict[str, Any], *, sse: bool = False) -> None:
    """What ext_proc does with the call's response (extauthz.envoy.process)."""
    _, header = route_of(d)
    ex = app.learner.exchange(d.server, d.caller.key, d.session_id or None, header)
    assert ex is not None
    body = orjson.dumps({"jsonrpc": "2.0", "id": d.ids[0], "result": result})
    if sse:
        ex.on_response_headers(200, {"content-type": "text/event-stream"})
        ex.on_body(b"event: message\ndata: " + body + b"\n\n", False)
    else:
        ex.on_response_headers(200, {"content-type": "application/json"})
        ex.on_body(body, True)
    ex.close()


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
def test_a_link_returned_to_a_session_is_readable_there_only(app: App, sse: bool) -> None:
    d = call(app, session="s1")
    assert d.allowed and d.plan.await_result and route_of(d)[0] == "learn"
    assert read(app, LINK, session="s1").reason is Reason.UNKNOWN_CAPABILITY     # result not read yet
    answer(app, d, {"content": [link(LINK)]}, sse=sse)
    assert read(app, LINK, session="s1").reason is Reason.ALLOWED
    assert read(app, OTHER_LINK, session="s1").reason is Reason.UNKNOWN_CAPABILITY
    assert read(app, LINK, session="s2").reason is Reason.UNKNOWN_CAPABILITY     # another session of hers
    assert read(app, LINK, session=None).reason is Reason.UNKNOWN_CAPABILITY
    assert read(app, LINK, session="s9", claims=BOB).reason is Reason.UNKNOWN_CAPABILITY   # another caller


def test_resource_rules_still_apply_to_a_linked_uri(app: App) -> None:
    d = call(app, session="s1", claims=NOGROUP)
    answer(app, d, {"content": [link(LINK), link("crm://elsewhere/x")]})
    # crm://customers/* needs support or admin; crm://elsewhere/* has no rule at all
    assert read(app, LINK, session="s1", claims=NOGROUP).reason is Reason.NOT_ALLOWED
    assert read(app, "crm://elsewhere/x", session="s1", claims=NOGROUP).reason is Reason.NOT_ALLOWED


def test_stateless_links_belong_to_the_caller(app: App) -> None:
    d = call(app, session=None)
    answer(app, d, {"content": [link(LINK)]})
    assert read(app, LINK, session=None).reason is Reason.ALLOWED
    assert read(app, LINK, session=None, claims=BOB).reason is Reason.UNKNOWN_CAPABILITY


def test_an_error_result_or_a_traversal_link_grants_nothing(app: App) -> None:
    d = call(app, session="s1")
    answer(app, d, {"content": [link(LINK)], "isError": True})
    assert read(app, LINK, session="s1").reason is Reason.UNKNOWN_CAPABILITY
    d = call(app, session="s1", mid=2)
    answer(app, d, {"content": [link("crm://customers/../admin/keys")]})
    assert read(app, "crm://customers/../admin/keys", session="s1").reason is Reason.MALFORMED_REQUEST


def test_link_free_tools_go_back_to_sampling(app: App) -> None:
    for i in range(L.PROVE):
        d = call(app, session="s1", mid=i)
        assert route_of(d)[0] == "learn"
        answer(app, d, {"content": [{"type": "text", "text": "ok"}]})
    d = call(app, session="s1", mid=99)
    assert not d.plan.await_result and route_of(d)[0] != "learn"


def test_results_read_for_links_only_are_not_sampled_into_the_inventory(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path, "audit: {observeResponses: \"off\"}\n")
    seen: list[Any] = []
    monkeypatch.setattr(app.observer, "on_result", lambda *a: seen.append(a))
    d = call(app, session="s1")
    assert route_of(d)[0] == "learn"
    answer(app, d, {"content": [link(LINK)]})
    assert read(app, LINK, session="s1").reason is Reason.ALLOWED
    assert seen == []


def test_with_unknown_capabilities_allowed_nothing_is_awaited(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    p = tmp_path / "policy.yaml"
    p.write_text(p.read_text().replace("unknownCapability: deny", "unknownCapability: allow"))
    app.holder.reload()
    app._on_reload("ok")
    d = call(app, session="s1")
    assert d.allowed and not d.plan.await_result


def test_a_grant_reaches_the_other_workers_over_the_bus(tmp_path: Path) -> None:
    """`serve --workers N`: a grant is published (op "link") and applied by another worker as is;
    applying it there does not publish it again."""
    from extauthz.workers.bus import apply_change
    from extauthz.workers.supervisor import RELAYED

    here, there = make_app(tmp_path), make_app(tmp_path)
    sent: list[dict[str, Any]] = []
    here.links.on_change = lambda op, payload: sent.append({"op": op, **payload})
    there.links.on_change = lambda op, payload: pytest.fail("a relayed grant was published again")
    d = call(here, session="s1")
    answer(here, d, {"content": [link(LINK)]})
    (msg,) = sent
    assert msg["op"] in RELAYED
    for _ in range(L.PROVE):                             # there, the tool had looked link-free so far
        there.links.observed("crm", "s0", ALICE_KEY, "open_tool", {"content": []})
    assert not there.links.wants("crm", "open_tool")
    apply_change(there, orjson.loads(orjson.dumps(msg)))
    assert read(there, LINK, session="s1").reason is Reason.ALLOWED
    assert read(there, LINK, session="s2").reason is Reason.UNKNOWN_CAPABILITY
    assert there.links.wants("crm", "open_tool")        # the tool returns links: read there too
