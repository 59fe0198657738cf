"""The learn header's caller view and observed calls; Exchange filtering lists per caller (the
rewriter ext_proc applies), reporting what each session was listed and observed call results."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from extauthz.mcp.learnheader import MAX_ENTRIES, MAX_NAME_CHARS, LearnEntry, decode_learn, encode_learn_header
from extauthz.mcp.sse import SseParser
from extauthz.sessions.visibility import Visibility
from extauthz.specs.exchange import Exchange
from extauthz.specs.learn import Learner
from extauthz.specs.listfilter import View
from extauthz.specs.store import SpecStore

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}
VIEW = View("https://issuer", "alice", "agent", ("support",))
ALL_TOOLS = ["lookup_customer", "search_customers", "export_customers", "delete_all"]


def entries_of(value: str | bytes) -> list[LearnEntry] | None:
    """The entries of a learn header (None: malformed)."""
    decoded = decode_learn(value, View.from_json)
    return None if decoded is None else decoded[0]


def b64(doc: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def keep_no_export(kind: str, item: Any) -> bool:
    """A caller who may call everything except export_*/delete_* tools and reports/** resources."""
    if kind == "tools":
        return not str(item.get("name", "")).startswith(("export_", "delete_"))
    if kind == "resources":
        return not str(item.get("uri", "")).startswith("crm://reports/")
    if kind == "prompts":
        return item.get("name") != "admin_prompt"
    return True


class Hooks:
    def __init__(self) -> None:
        self.views: list[tuple[str, View]] = []
        self.listed: list[tuple[Any, ...]] = []
        self.results: list[tuple[Any, ...]] = []


@pytest.fixture
def store() -> SpecStore:
    return SpecStore()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def learner(store: SpecStore, hooks: Hooks) -> Learner:
    def list_view(server: str, view: View) -> Callable[[str, Any], bool]:
        hooks.views.append((server, view))
        return keep_no_export

    def on_listed(server, session_id, caller, kind, keys, *, first, last):   # Visibility.listed_page's shape
        hooks.listed.append((server, session_id, caller, kind, keys, first, last))

    return Learner(store, lambda: "quarantine", list_view=list_view, on_listed=on_listed,
                   on_result=lambda *a: hooks.results.append(a))


def start(learner: Learner, entries: list[tuple[Any, str, Any]], view: View | None = VIEW, *,
          caller: str = "https://issuer|alice|agent", session: str | None = "sess-1") -> Exchange:
    ex = learner.exchange("crm", caller, session, encode_learn_header(entries, view))
    assert ex is not None
    return ex


def pump(ex: Exchange, body: bytes, headers: dict[str, str] = JSON, *, status: int = 200,
         chunk: int | None = None) -> bytes:
    """What ext_proc does (extauthz.envoy.process): learn from each chunk, then send the
    rewriter's replacement (or the chunk itself). Returns the body the client receives."""
    ex.on_response_headers(status, headers)
    chunks = [body] if chunk is None else [body[i:i + chunk] for i in range(0, len(body), chunk)] + [b""]
    out = bytearray()
    for i, c in enumerate(chunks):
        end = i == len(chunks) - 1
        ex.on_body(c, end)
        out += ex.rewriter.feed(c, end) if ex.rewriter is not None else c
    return bytes(out)


def tools_page(rid: Any, names: list[str], cursor: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
    if cursor is not None:
        result["nextCursor"] = cursor
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def sse(*messages: Any, eol: bytes = b"\r\n") -> bytes:
    return b"".join(b"event: message" + eol + b"data: " + orjson.dumps(m) + eol + eol for m in messages)


def names_in(msg: dict[str, Any], kind: str = "tools", field: str = "name") -> list[str]:
    return [it[field] for it in msg["result"][kind]]


def sse_messages(body: bytes) -> list[Any]:
    return [orjson.loads(e.data) for e in SseParser().feed(body)]


# -- the learn header with a view and observed calls ------------------------------------------------

def test_round_trip_with_view_and_observed_calls():
    entries = [(1, "tools/list", True), ("c-2", "tools/call", "lookup_customer"),
               (3, "resources/read", "crm://customers/c-100"), (4, "prompts/get", "draft_reply"),
               (5, "tools/list", False)]
    value = encode_learn_header(entries, VIEW)
    assert "=" not in value
    got = decode_learn(value, View.from_json)
    assert got is not None
    assert got[1] == VIEW
    assert got[0] == [LearnEntry(1, "tools/list", True), LearnEntry("c-2", "tools/call", False, "lookup_customer"),
                      LearnEntry(3, "resources/read", False, "crm://customers/c-100"),
                      LearnEntry(4, "prompts/get", False, "draft_reply"), LearnEntry(5, "tools/list", False)]
    assert entries_of(value) == got[0]
    assert decode_learn(value.encode(), View.from_json) == got


def test_round_trip_without_view_has_none():
    value = encode_learn_header([(7, "tools/call", "x")])
    assert decode_learn(value, View.from_json) == ([LearnEntry(7, "tools/call", False, "x")], None)


def test_view_with_no_groups_round_trips():
    v = View("iss", "sub", "", ())
    assert decode_learn(encode_learn_header([(1, "prompts/list", True)], v), View.from_json)[1] == v


def test_view_groups_keep_order_and_unicode():
    v = View("iss", "s\u00fcb", "c", ("z", "a", "\u00e9quipe"))
    assert decode_learn(encode_learn_header([(1, "tools/list", True)], v), View.from_json)[1] == v


def test_observed_name_at_the_length_bound_is_accepted():
    name = "n" * MAX_NAME_CHARS
    assert entries_of(encode_learn_header([(1, "tools/call", name)])) == [
        LearnEntry(1, "tools/call", False, name)]


def test_view_with_max_entries_is_accepted_and_one_more_is_not():
    ok = [[i, "tools/list", True] for i in range(MAX_ENTRIES)]
    assert len(decode_learn(b64(ok + [{"v": ["i", "s", "c", []]}]), View.from_json)[0]) == MAX_ENTRIES
    assert decode_learn(b64(ok + [[MAX_ENTRIES, "tools/list", True], {"v": ["i", "s", "c", []]}]), View.from_json) is None


def test_a_view_alone_is_a_resumed_stream_filtered_by_shape(learner):
    value = encode_learn_header([], VIEW)
    assert decode_learn(value, View.from_json) == ([], VIEW)
    ex = learner.exchange("crm", "alice", "s", value)
    out = pump(ex, sse(tools_page("earlier", ALL_TOOLS)), SSE)
    assert names_in(sse_messages(out)[0]) == ["lookup_customer", "search_customers"]


GOOD = [1, "tools/list", True]


@pytest.mark.parametrize("doc", [
    [GOOD, {"v": ["iss", "sub", "client"]}],                          # three fields
    [GOOD, {"v": ["iss", "sub", "client", ["g"], "extra"]}],          # five fields
    [GOOD, {"v": ["iss", "sub", 5, ["g"]]}],                          # client not a string
    [GOOD, {"v": [None, "sub", "client", ["g"]]}],
    [GOOD, {"v": ["iss", "sub", "client", "support"]}],               # groups not a list
    [GOOD, {"v": ["iss", "sub", "client", [1]]}],                     # group not a string
    [GOOD, {"v": ["iss", "sub", "client", [["g"]]]}],
    [GOOD, {"v": {"iss": "i"}}],                                      # v not a list
    [GOOD, {"v": ["iss", "sub", "client", ["g"]], "x": 1}],           # extra key
    [GOOD, {"w": ["iss", "sub", "client", ["g"]]}],                   # wrong key
    [GOOD, {}],
    [{"v": ["iss", "sub", "client", ["g"]]}, GOOD],                   # view not last
    [GOOD, {"v": ["i", "s", "c", []]}, {"v": ["i", "s", "c", []]}],   # two views
], ids=lambda d: orjson.dumps(d).decode()[:60])
def test_malformed_view_makes_header_invalid(doc, learner):
    value = b64(doc)
    assert decode_learn(value, View.from_json) is None
    assert entries_of(value) is None
    ex = learner.exchange("crm", "alice", "s", value)
    assert ex is not None and ex.failure == "marker_malformed" and ex.entries == []


@pytest.mark.parametrize("entry", [
    [1, "tools/call", 5],
    [1, "tools/call", None],
    [1, "tools/call", True],            # an observed call must name its capability
    [1, "tools/call", ["x"]],
    [1, "resources/read", {"uri": "x"}],
    [1, "prompts/get", 1.5],
    [1, "tools/run", "x"],              # unknown method
    [1, "tools/call2", "x"],
    [1, "sampling/createMessage", "x"],
    [1, "tools/list", "x"],             # a learnable method takes a bool, not a name
    [1, "initialize", "x"],
    [1, "tools/call", "n" * (MAX_NAME_CHARS + 1)],
    [True, "tools/call", "x"],          # bool is not an id
    [None, "tools/call", "x"],
    [1, "tools/call"],                  # short
    [1, "tools/call", "x", "y"],        # long
], ids=lambda e: orjson.dumps(e).decode()[:50])
def test_bad_observe_entry_makes_header_invalid(entry):
    assert entries_of(b64([GOOD, entry])) is None
    assert entries_of(b64([entry, {"v": ["i", "s", "c", []]}])) is None


def test_exchange_carries_view_and_entries(learner):
    ex = start(learner, [(1, "tools/list", True), (2, "tools/call", "lookup_customer")])
    assert ex.view == VIEW
    assert ex.entries == [LearnEntry(1, "tools/list", True), LearnEntry(2, "tools/call", False, "lookup_customer")]
    assert ex.rewriter is None              # not before the response headers


# -- Exchange: when a rewriter is set ----------------------------------------------------------------

@pytest.mark.parametrize("headers,mode", [(JSON, "json"), (SSE, "sse"),
                                          ({"content-type": "application/vnd.x+json"}, "json"),
                                          ({"Content-Type": "text/event-stream; charset=utf-8"}, "sse")])
def test_rewriter_set_after_json_or_sse_headers(learner, hooks, headers, mode):
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, headers)
    assert ex.rewriter is not None and ex.rewriter.mode == mode
    assert hooks.views == [("crm", VIEW)]


def test_no_rewriter_without_a_view(learner, hooks):
    ex = start(learner, [(1, "tools/list", True)], view=None)
    ex.on_response_headers(200, JSON)
    assert ex.rewriter is None and hooks.views == []


def test_no_rewriter_when_list_view_declines(learner, hooks):
    learner.list_view = lambda server, view: None
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, SSE)
    assert ex.rewriter is None


def test_no_rewriter_without_list_view_hook(learner):
    learner.list_view = None
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, JSON)
    assert ex.rewriter is None


def test_answers_to_other_requests_pass_untouched(learner, hooks):
    ex = start(learner, [(1, "tools/call", "lookup_customer"), (2, "initialize", True)])
    body = orjson.dumps([{"jsonrpc": "2.0", "id": 1, "result": {"content": [], "tools": [{"name": "export_x"}]}},
                         {"jsonrpc": "2.0", "id": 2, "result": {"protocolVersion": "2025-03-26"}}])
    assert pump(ex, body) == body


def test_ambiguous_list_ids_are_filtered_by_the_result_shape(learner):
    ex = start(learner, [(1, "tools/list", True), (1, "prompts/list", True)])
    out = orjson.loads(pump(ex, orjson.dumps(tools_page(1, ALL_TOOLS))))
    assert names_in(out) == ["lookup_customer", "search_customers"]


@pytest.mark.parametrize("status,headers", [(500, JSON), (404, SSE), (200, {"content-type": "text/html"}), ("abc", JSON)])
def test_lists_are_filtered_whatever_the_status_or_content_type(learner, status, headers):
    # a client may read a list from an error status or a wrong content type: filtered all the same
    ex = start(learner, [(1, "tools/list", True)])
    msg = tools_page(1, ALL_TOOLS)
    body = sse(msg) if headers is SSE else orjson.dumps(msg)
    out = pump(ex, body, headers, status=status)
    got = sse_messages(out)[0] if headers is SSE else orjson.loads(out)
    assert names_in(got) == ["lookup_customer", "search_customers"]


def test_a_compressed_list_response_is_replaced_by_an_error(learner, store):
    ex = start(learner, [(1, "tools/list", True)])
    out = pump(ex, b"\x1f\x8b\x08 gzip bytes", {**JSON, "content-encoding": "gzip"}, chunk=4)
    assert orjson.loads(out)["error"]["code"] == -32603 and ex.rewriter.replaces_body
    assert store.get("crm") is None


# -- Exchange: filtering -------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 1, 5, 64])
def test_json_list_filtered_for_the_caller_and_learned_whole(learner, store, chunk):
    ex = start(learner, [(1, "tools/list", True)])
    out = pump(ex, orjson.dumps(tools_page(1, ALL_TOOLS)), chunk=chunk)
    assert names_in(orjson.loads(out)) == ["lookup_customer", "search_customers"]
    assert set(store.get("crm").tools) == set(ALL_TOOLS)           # the spec is the unfiltered list
    assert ex.rewriter.rewrote == 1


def test_json_batch_filters_only_its_list_ids(learner):
    ex = start(learner, [(1, "tools/list", True), ("q", "tools/call", "lookup_customer")])
    batch = [tools_page(1, ALL_TOOLS),
             tools_page(99, ALL_TOOLS),                                         # not a request of ours
             {"jsonrpc": "2.0", "id": "q", "result": {"content": [], "tools": [{"name": "export_x"}]}},
             {"jsonrpc": "2.0", "method": "notifications/message", "params": {"tools": []}}]
    out = orjson.loads(pump(ex, orjson.dumps(batch), chunk=11))
    assert names_in(out[0]) == ["lookup_customer", "search_customers"]
    assert names_in(out[1]) == ["lookup_customer", "search_customers"]     # unknown id: filtered by its shape
    assert out[2:] == batch[2:]                                             # a call's result is not a list


def test_id_type_matters_for_filtering(learner, store):
    ex = start(learner, [(2, "tools/list", True), ("2", "tools/call", "lookup_customer")])
    call = {"jsonrpc": "2.0", "id": "2", "result": {"content": [], "tools": [{"name": "export_x"}]}}
    body = orjson.dumps([call, tools_page(2, ALL_TOOLS)])
    out = orjson.loads(pump(ex, body))
    assert out[0] == call                         # "2" answers another request than 2
    assert names_in(out[1]) == ["lookup_customer", "search_customers"]


def test_nothing_hidden_means_the_same_list_written_out_again(learner):
    ex = start(learner, [(1, "tools/list", True)])
    body = b'{"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "lookup_customer"}]}}'
    assert pump(ex, body, chunk=3) == orjson.dumps(orjson.loads(body))


def test_a_list_with_duplicate_keys_goes_out_as_it_was_filtered(learner):
    # a first-key-wins parser would read the admin tool from the original bytes
    ex = start(learner, [(1, "tools/list", True)])
    body = (b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"export_customers"}],'
            b'"tools":[{"name":"lookup_customer","name":"lookup_customer"}]}}')
    out = pump(ex, body)
    assert b"export_customers" not in out and names_in(orjson.loads(out)) == ["lookup_customer"]


def test_paginated_page_keeps_its_cursor_when_filtered(learner):
    ex = start(learner, [(1, "tools/list", True)])
    out = orjson.loads(pump(ex, orjson.dumps(tools_page(1, ALL_TOOLS, cursor="next-1"))))
    assert out["result"]["nextCursor"] == "next-1"
    assert names_in(out) == ["lookup_customer", "search_customers"]


@pytest.mark.parametrize("chunk", [None, 1, 3, 17])
def test_sse_list_filtered_and_other_events_untouched(learner, store, chunk):
    ex = start(learner, [(1, "tools/list", True), (2, "tools/call", "lookup_customer")])
    note = b"event: message\r\ndata: " + orjson.dumps(
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}) + b"\r\n\r\n"
    other = b": comment\r\nevent: message\r\ndata: " + orjson.dumps(tools_page(8, ALL_TOOLS)) + b"\r\n\r\n"
    mine = sse(tools_page(1, ALL_TOOLS))
    call = sse({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "ok"}]}})
    out = pump(ex, note + other + mine + call, SSE, chunk=chunk)
    assert out.startswith(note)
    assert out.endswith(call)
    msgs = sse_messages(out)
    assert len(msgs) == 4
    assert names_in(msgs[1]) == ["lookup_customer", "search_customers"]     # not ours: filtered by shape
    assert names_in(msgs[2]) == ["lookup_customer", "search_customers"]
    assert set(store.get("crm").tools) == set(ALL_TOOLS)


@pytest.mark.parametrize("method,kind,field,items,kept", [
    ("resources/list", "resources", "uri",
     ["crm://customers/c-1", "crm://reports/summary"], ["crm://customers/c-1"]),
    ("prompts/list", "prompts", "name", ["draft_reply", "admin_prompt"], ["draft_reply"]),
])
def test_other_list_kinds_are_filtered_by_kind(learner, method, kind, field, items, kept):
    ex = start(learner, [(1, method, True)])
    msg = {"jsonrpc": "2.0", "id": 1, "result": {kind: [{field: x, "name": "n"} if field == "uri" else {field: x}
                                                         for x in items]}}
    out = orjson.loads(pump(ex, orjson.dumps(msg)))
    assert names_in(out, kind, field) == kept


def test_keep_sees_the_kind_of_its_own_request(learner):
    seen: list[str] = []

    def keep(kind, item):
        seen.append(kind)
        return False

    learner.list_view = lambda server, view: keep
    ex = start(learner, [("t", "resources/templates/list", True)])
    msg = {"jsonrpc": "2.0", "id": "t", "result": {"resourceTemplates": [{"uriTemplate": "crm://c/{id}", "name": "c"}]}}
    out = orjson.loads(pump(ex, orjson.dumps(msg)))
    assert out["result"]["resourceTemplates"] == []
    assert seen == ["resourceTemplates"]


# -- Exchange: what the session was listed --------------------------------------------------------------

@pytest.mark.parametrize("transport", ["json", "sse"])
def test_on_listed_gets_unfiltered_keys_across_pages(learner, hooks, store, transport):
    pages = [(1, ALL_TOOLS[:2], "c1", True), (2, ALL_TOOLS[2:3], "c2", False), (3, ALL_TOOLS[3:], None, False)]
    for rid, names, cursor, first in pages:
        ex = start(learner, [(rid, "tools/list", first)])
        msg = tools_page(rid, names, cursor)
        pump(ex, orjson.dumps(msg) if transport == "json" else sse(msg), JSON if transport == "json" else SSE,
             chunk=4)
    assert hooks.listed == [
        ("crm", "sess-1", "https://issuer|alice|agent", "tools", ALL_TOOLS[:2], True, False),
        ("crm", "sess-1", "https://issuer|alice|agent", "tools", ALL_TOOLS[2:3], False, False),
        ("crm", "sess-1", "https://issuer|alice|agent", "tools", ALL_TOOLS[3:], False, True),
    ]
    assert set(store.get("crm").tools) == set(ALL_TOOLS)


def test_on_listed_keys_by_kind_skip_junk(learner, hooks):
    ex = start(learner, [(1, "resources/list", True), (2, "resources/templates/list", True)], view=None,
               session=None)
    batch = [{"jsonrpc": "2.0", "id": 1, "result": {"resources": [
                 {"uri": "crm://a", "name": "a"}, {"uri": 5, "name": "b"}, "junk", {"name": "no uri"}]}},
             {"jsonrpc": "2.0", "id": 2, "result": {"resourceTemplates": [
                 {"uriTemplate": "crm://t/{x}", "name": "t"}]}}]
    pump(ex, orjson.dumps(batch))
    assert hooks.listed == [("crm", "", "https://issuer|alice|agent", "resources", ["crm://a"], True, True),
                            ("crm", "", "https://issuer|alice|agent", "resourceTemplates", ["crm://t/{x}"],
                             True, True)]


def test_on_listed_empty_cursor_is_last(learner, hooks):
    ex = start(learner, [(1, "prompts/list", False)])
    pump(ex, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"prompts": [{"name": "p"}], "nextCursor": ""}}))
    assert hooks.listed[-1][-2:] == (False, True)


def test_on_listed_not_called_for_errors(learner, hooks):
    ex = start(learner, [(1, "tools/list", True)])
    pump(ex, orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "no"}}))
    assert hooks.listed == []


def test_failing_on_listed_hook_does_not_stop_learning(learner, store):
    def boom(*a):
        raise RuntimeError("hook bug")

    learner.on_listed = boom
    ex = start(learner, [(1, "tools/list", True)])
    pump(ex, orjson.dumps(tools_page(1, ALL_TOOLS)))
    assert ex.learned == [("tools/list", 4)]
    assert set(store.get("crm").tools) == set(ALL_TOOLS)


def test_visibility_listed_page_accepts_the_on_listed_call(store):
    """The app wires `Learner(on_listed=visibility.listed_page)` (extauthz/app.py): the hook's
    call must fit that method, or no session's visibility is ever recorded."""
    vis = Visibility()
    lr = Learner(store, lambda: "quarantine", on_listed=vis.listed_page)
    for rid, names, cursor, first in [(1, ALL_TOOLS[:2], "c", True), (2, ALL_TOOLS[2:3], None, False)]:
        ex = lr.exchange("crm", "iss|alice|agent", "sess-1", encode_learn_header([(rid, "tools/list", first)]))
        pump(ex, orjson.dumps(tools_page(rid, names, cursor)))
    session_view, caller_view = vis.view("crm", "sess-1", "iss|alice|agent")
    assert session_view == {"tools": frozenset(ALL_TOOLS[:3])}
    assert caller_view == {"tools": frozenset(ALL_TOOLS[:3])}


# -- Exchange: observed calls ------------------------------------------------------------------------------

def test_on_result_json(learner, hooks):
    ex = start(learner, [("c1", "tools/call", "lookup_customer")], view=None)
    result = {"content": [{"type": "text", "text": "Ada, ada@example.com"}]}
    body = orjson.dumps({"jsonrpc": "2.0", "id": "c1", "result": result})
    pump(ex, body, chunk=9)
    assert hooks.results == [("crm", "https://issuer|alice|agent", "sess-1",
                              LearnEntry("c1", "tools/call", False, "lookup_customer"), result, len(body))]


def test_on_result_sse_size_is_the_event_data(learner, hooks):
    ex = start(learner, [(3, "resources/read", "crm://customers/c-1")], view=None, session=None)
    msg = {"jsonrpc": "2.0", "id": 3, "result": {"contents": [{"uri": "crm://customers/c-1", "text": "x"}]}}
    pump(ex, sse({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, msg), SSE, chunk=2)
    assert len(hooks.results) == 1
    server, caller, session, entry, result, size = hooks.results[0]
    assert (server, caller, session) == ("crm", "https://issuer|alice|agent", "")
    assert entry == LearnEntry(3, "resources/read", False, "crm://customers/c-1")
    assert result == msg["result"]
    assert size == len(orjson.dumps(msg))


def test_on_result_for_each_observed_call_in_a_batch(learner, hooks):
    ex = start(learner, [(1, "tools/call", "a"), (2, "prompts/get", "p"), (3, "tools/list", True)], view=None)
    batch = [{"jsonrpc": "2.0", "id": 2, "result": {"messages": []}},
             {"jsonrpc": "2.0", "id": 1, "result": {"content": []}},
             tools_page(3, ["a"])]
    body = orjson.dumps(batch)
    pump(ex, body)
    assert [(r[3].name, r[4], r[5]) for r in hooks.results] == [("p", {"messages": []}, len(body)),
                                                                ("a", {"content": []}, len(body))]


def test_on_result_none_when_json_body_too_large(store, hooks):
    lr = Learner(store, lambda: "quarantine", max_body_bytes=64, on_result=lambda *a: hooks.results.append(a))
    ex = lr.exchange("crm", "caller", "s9", encode_learn_header([(1, "tools/call", "big")]))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x" * 200}]}})
    pump(ex, body, chunk=40)
    assert len(hooks.results) == 1
    server, caller, session, entry, result, size = hooks.results[0]
    assert (server, caller, session, entry.name, result) == ("crm", "caller", "s9", "big", None)
    assert size > 64
    assert ex.abandoned


def test_on_result_not_called_for_error_answers(learner, hooks):
    ex = start(learner, [(1, "tools/call", "a")], view=None)
    pump(ex, orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "x"}}))
    assert hooks.results == []


def test_failing_on_result_hook_is_contained(learner, store):
    def boom(*a):
        raise RuntimeError("x")

    learner.on_result = boom
    ex = start(learner, [(1, "tools/call", "a"), (2, "tools/list", True)], view=None)
    pump(ex, orjson.dumps([{"jsonrpc": "2.0", "id": 1, "result": {}}, tools_page(2, ["z"])]))
    assert ex.learned == [("tools/list", 1)]
    assert "z" in store.get("crm").tools
