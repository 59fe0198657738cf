"""Learner / Exchange: pairing responses with learnable requests and feeding the SpecStore."""

from __future__ import annotations

import base64
import json
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.mcp.learnheader import LearnEntry, decode_learn, encode_learn_header
from extauthz.specs.exchange import Exchange
from extauthz.specs.learn import Learner
from extauthz.specs.listfilter import View
from extauthz.specs.store import SpecStore

DATA = json.loads((Path(__file__).parent / "data" / "crm_sdk_responses.json").read_text())
SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}
CRM_TOOLS = {"lookup_customer", "search_customers", "export_customers", "update_settings"}


def entries_of(value: str | bytes) -> list[LearnEntry] | None:
    """The entries of a learn header (None: malformed)."""
    decoded = decode_learn(value, View.from_json)
    return None if decoded is None else decoded[0]


class RecordingStore(SpecStore):
    def __init__(self) -> None:
        super().__init__()
        self.pages: list[dict[str, Any]] = []
        self.infos: list[tuple[str, dict[str, Any]]] = []

    def apply_page(self, server, kind, items, *, first, last, partition="", on_drift="quarantine", **_: object):
        self.pages.append(dict(server=server, kind=kind, n=len(items), first=first, last=last,
                               partition=partition, on_drift=on_drift))
        return super().apply_page(server, kind, items, first=first, last=last, partition=partition,
                                  on_drift=on_drift)

    def note_info(self, server, info):
        self.infos.append((server, info))
        super().note_info(server, info)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def learner(store: RecordingStore) -> Learner:
    return Learner(store, lambda: "quarantine")


def start(learner: Learner, entries: list[tuple[Any, str, bool]], *, server: str = "crm",
          caller: str = "alice", session: str | None = "sess-1") -> Exchange:
    ex = learner.exchange(server, caller, session, encode_learn_header(entries))
    assert ex is not None
    return ex


def run(ex: Exchange, body: bytes, headers: dict[str, str] = SSE, *, status: int = 200,
        chunk: int | None = None) -> Exchange:
    ex.on_response_headers(status, headers)
    if chunk is None:
        ex.on_body(body, True)
    else:
        for i in range(0, len(body), chunk):
            ex.on_body(body[i:i + chunk], False)
        ex.on_body(b"", True)
    return ex


def sse(*messages: Any) -> bytes:
    return b"".join(b"event: message\r\ndata: " + orjson.dumps(m) + b"\r\n\r\n" for m in messages)


def tools_page(rid: Any, names: list[str], cursor: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
    if cursor is not None:
        result["nextCursor"] = cursor
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def tool_names(store: SpecStore, server: str = "crm") -> set[str]:
    spec = store.get(server)
    return set(spec.tools) if spec else set()


# -- learn header --------------------------------------------------------------------------------

def test_learn_header_round_trip() -> None:
    value = encode_learn_header([(1, "initialize", True), ("a-2", "tools/list", False)])
    assert "=" not in value
    assert entries_of(value) == [LearnEntry(1, "initialize", True), LearnEntry("a-2", "tools/list", False)]
    assert entries_of(value.encode()) == entries_of(value)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("value", [
    None, "", "   ", "!!!!", "a", "abc=", "YWJj+/", "é",
    _b64(b"not json"), _b64(b"{}"), _b64(b"[]"), _b64(b"[1]"), _b64(b'[[1,"tools/list"]]'),
    _b64(b'[[1,"tools/call",true]]'),                      # not a learnable method
    _b64(b'[[true,"tools/list",true]]'),                   # bool is not an id
    _b64(b'[[null,"tools/list",true]]'), _b64(b'[[1.5,"tools/list",true]]'),
    _b64(b'[[1,"tools/list",1]]'),                         # first must be a bool
    _b64(b'[[1,"tools/list",true],"x"]'),
    _b64(orjson.dumps([["x" * 600, "tools/list", True]])),  # absurd id
    _b64(orjson.dumps([[i, "tools/list", True] for i in range(300)])),   # too many entries
    "A" * 20000,                                            # oversized header
    b"\xff\xfe",
])
def test_learn_header_garbage_is_none(value: Any, learner: Learner) -> None:
    assert entries_of(value) is None
    ex = learner.exchange("crm", "alice", None, value)
    if not value:
        assert ex is None                   # no marker: the Check asked for nothing
    else:                                   # an unreadable marker: nothing learned, lists shown empty
        assert ex is not None and ex.entries == [] and ex.failure == "marker_malformed"


def test_garbage_marker_is_ignored_where_lists_are_not_filtered(learner: Learner) -> None:
    learner.filtering = lambda server: False
    assert learner.exchange("crm", "alice", None, "%%%garbage") is None


def test_no_server_shows_lists_empty(learner: Learner) -> None:
    for server in ("", None):
        ex = learner.exchange(server, "alice", None, encode_learn_header([(1, "tools/list", True)]))
        assert ex is not None and ex.entries == [] and ex.failure == "no_server"
    assert learner.exchange(None, "alice", None, None) is None


# -- captured SDK responses ----------------------------------------------------------------------

LIST_CASES = [("tools/list", "tools", 4), ("resources/list", "resources", 1),
              ("resources/templates/list", "templates", 1), ("prompts/list", "prompts", 1)]


@pytest.mark.parametrize("transport", ["sse", "json"])
@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
@pytest.mark.parametrize("method,table,count", LIST_CASES)
def test_captured_sdk_list_responses(learner: Learner, store: RecordingStore, transport: str,
                                     chunk: int | None, method: str, table: str, count: int) -> None:
    cap = DATA[f"{transport}:{method}"]
    rid = json.loads(cap["body"].split("data: ", 1)[-1].split("\r\n")[0] if transport == "sse" else cap["body"])["id"]
    ex = run(start(learner, [(rid, method, True)]), cap["body"].encode(), cap["headers"],
             status=cap["status"], chunk=chunk)
    assert ex.learned == [(method, count)]
    assert len(getattr(store.get("crm"), table)) == count
    assert ex.issued_session_id is None      # stateful servers echo the header on every response
    assert store.pages[-1]["partition"] == "sess-1" and store.pages[-1]["last"] is True


def test_sse_tools_list_one_byte_chunks_learns_schema(learner: Learner, store: RecordingStore) -> None:
    body = (b'event: message\r\ndata: {"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_customer",'
            b'"description":"Look up one customer by id.","inputSchema":{"properties":{"customer_id":'
            b'{"title":"Customer Id","type":"string"}},"required":["customer_id"],"type":"object"}}]}}\r\n\r\n')
    ex = run(start(learner, [(2, "tools/list", True)]), body, SSE, chunk=1)
    assert ex.learned == [("tools/list", 1)]
    tool = store.get("crm").tools["lookup_customer"]
    assert tool.input_schema["required"] == ["customer_id"]
    assert tool.description == "Look up one customer by id."


@pytest.mark.parametrize("transport", ["sse", "json"])
def test_initialize_captures_session_and_info(store: RecordingStore, transport: str) -> None:
    issued: list[tuple[str, str, str]] = []
    learner = Learner(store, lambda: "quarantine", on_session=lambda *a: issued.append(a))
    cap = DATA[f"{transport}:initialize"]
    ex = run(start(learner, [(1, "initialize", True)], session=None), cap["body"].encode(), cap["headers"], chunk=5)
    sid = cap["headers"]["mcp-session-id"]
    assert ex.issued_session_id == sid
    assert issued == [("crm", "alice", sid)]
    assert ex.learned == [("initialize", 4)]
    info = store.get("crm").info
    assert info["serverInfo"]["name"] == "demo-crm"
    assert info["protocolVersion"] == "2025-11-25"
    assert info["instructions"] == "A demo CRM."
    assert "tools" in info["capabilities"]


def test_initialize_session_header_rejected_when_not_visible_ascii(learner: Learner) -> None:
    ex = start(learner, [(1, "initialize", True)], session=None)
    ex.on_response_headers(200, {"Content-Type": "application/json", "Mcp-Session-Id": "bad id"})
    assert ex.issued_session_id is None


def test_initialize_error_does_not_bind_session(store: RecordingStore) -> None:
    issued: list[Any] = []
    learner = Learner(store, lambda: "quarantine", on_session=lambda *a: issued.append(a))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad version"}})
    ex = run(start(learner, [(1, "initialize", True)]), body, {**JSON, "mcp-session-id": "s"})
    assert ex.learned == [] and issued == [] and store.get("crm") is None


def test_server_discover(learner: Learner, store: RecordingStore) -> None:
    body = sse({"jsonrpc": "2.0", "id": "d1", "result": {
        "supportedVersions": ["2026-07-28", "2025-11-25"], "capabilities": {"tools": {}},
        "cacheScope": "public", "ttlMs": 0, "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "crm", "version": "2"}}}})
    ex = run(start(learner, [("d1", "server/discover", True)], session=None), body, SSE, chunk=3)
    assert ex.learned == [("server/discover", 3)]
    info = store.get("crm").info
    assert info == {"supportedVersions": ["2026-07-28", "2025-11-25"], "capabilities": {"tools": {}},
                    "serverInfo": {"name": "crm", "version": "2"}}
    assert store.pages == []


# -- pagination ----------------------------------------------------------------------------------

def test_pages_merge_into_one_snapshot(learner: Learner, store: RecordingStore) -> None:
    run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["a", "b"], "c1")))
    assert tool_names(store) == set()                  # snapshot not complete yet
    run(start(learner, [(2, "tools/list", False)]), orjson.dumps(tools_page(2, ["c"], "c2")), JSON)
    assert tool_names(store) == set()
    run(start(learner, [(3, "tools/list", False)]), sse(tools_page(3, ["d"], "")), chunk=2)
    assert tool_names(store) == {"a", "b", "c", "d"}
    assert [(p["first"], p["last"]) for p in store.pages] == [(True, False), (False, False), (False, True)]


def test_new_first_page_restarts_snapshot(learner: Learner, store: RecordingStore) -> None:
    run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["old1"], "c1")))
    run(start(learner, [(2, "tools/list", True)]), sse(tools_page(2, ["new1"], "c9")))
    run(start(learner, [(3, "tools/list", False)]), sse(tools_page(3, ["new2"])))
    assert tool_names(store) == {"new1", "new2"}


def test_second_full_snapshot_replaces_first(learner: Learner, store: RecordingStore) -> None:
    run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["a", "b"])))
    run(start(learner, [(2, "tools/list", True)]), sse(tools_page(2, ["a"])))
    assert tool_names(store) == {"a"}


def test_pages_are_partitioned_by_session_then_caller(learner: Learner, store: RecordingStore) -> None:
    run(start(learner, [(1, "tools/list", True)], session="s1"), sse(tools_page(1, ["a"], "c1")))
    # a continuation in another session has no start there: nothing merges
    run(start(learner, [(2, "tools/list", False)], session="s2"), sse(tools_page(2, ["evil"])))
    assert tool_names(store) == set()
    run(start(learner, [(3, "tools/list", False)], session="s1"), sse(tools_page(3, ["b"])))
    assert tool_names(store) == {"a", "b"}
    run(start(learner, [(4, "tools/list", True)], session=None, caller="bob"), sse(tools_page(4, ["x"])))
    assert store.pages[-1]["partition"] == "bob"


def test_drift_mode_is_read_per_page_and_drift_quarantines(store: RecordingStore) -> None:
    mode = ["quarantine"]
    learner = Learner(store, lambda: mode[0])
    page = tools_page(1, ["a"])
    run(start(learner, [(1, "tools/list", True)]), sse(page))
    changed = tools_page(2, ["a"])
    changed["result"]["tools"][0]["inputSchema"] = {"type": "object", "properties": {"x": {}}}
    run(start(learner, [(2, "tools/list", True)]), sse(changed))
    assert ("tools", "a") in store.get("crm").quarantined
    mode[0] = "accept"
    run(start(learner, [(3, "tools/list", True)]), sse(tools_page(3, ["a"])))
    assert [p["on_drift"] for p in store.pages] == ["quarantine", "quarantine", "accept"]


def test_drift_mode_callback_failure_falls_back_to_quarantine(store: RecordingStore) -> None:
    learner = Learner(store, lambda: 1 / 0)
    run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["a"])))
    assert store.pages[-1]["on_drift"] == "quarantine" and tool_names(store) == {"a"}


# -- batches and pairing -------------------------------------------------------------------------

def test_json_batch_response_out_of_order(learner: Learner, store: RecordingStore) -> None:
    entries = [(10, "tools/list", True), ("p", "prompts/list", True), (12, "resources/list", True)]
    batch = [
        {"jsonrpc": "2.0", "id": 11, "result": {"content": [], "isError": False}},   # a tools/call
        {"jsonrpc": "2.0", "id": "p", "result": {"prompts": [{"name": "greet"}]}},
        {"jsonrpc": "2.0", "id": 12, "error": {"code": -32603, "message": "boom"}},
        tools_page(10, ["a", "b"]),
    ]
    ex = run(start(learner, entries), orjson.dumps(batch), JSON, chunk=10)
    assert sorted(ex.learned) == [("prompts/list", 1), ("tools/list", 2)]
    assert tool_names(store) == {"a", "b"} and set(store.get("crm").prompts) == {"greet"}
    assert store.get("crm").resources == {}


def test_sse_batch_responses_as_separate_events(learner: Learner, store: RecordingStore) -> None:
    entries = [(1, "tools/list", True), (2, "resources/templates/list", True)]
    body = sse({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}},
               {"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "params": {}},  # server request, same id
               {"jsonrpc": "2.0", "id": 2, "result": {"resourceTemplates": [{"uriTemplate": "x://{a}", "name": "x"}]}},
               tools_page(1, ["t"]))
    ex = run(start(learner, entries), body, SSE, chunk=1)
    assert ex.learned == [("resources/templates/list", 1), ("tools/list", 1)]
    assert tool_names(store) == {"t"}
    assert set(store.get("crm").templates) == {"x://{a}"}
    assert ex.done


def test_sse_array_payload_in_one_event(learner: Learner, store: RecordingStore) -> None:
    body = b"data: " + orjson.dumps([tools_page(1, ["a"]), {"jsonrpc": "2.0", "id": 2, "result": {"prompts": []}}]) + b"\n\n"
    ex = run(start(learner, [(1, "tools/list", True), (2, "prompts/list", True)]), body)
    assert ex.learned == [("tools/list", 1), ("prompts/list", 0)]


@pytest.mark.parametrize("msg", [
    tools_page("1", ["a"]),                                   # string id for an int request
    tools_page(2, ["a"]),                                     # unknown id
    tools_page(True, ["a"]),
    {**tools_page(1, ["a"]), "jsonrpc": "1.0"},
    {"id": 1, "result": {"tools": [{"name": "a", "inputSchema": {}}]}},      # no jsonrpc
])
def test_mismatched_responses_ignored(learner: Learner, store: RecordingStore, msg: Any) -> None:
    ex = run(start(learner, [(1, "tools/list", True)]), sse(msg))
    assert ex.learned == [] and store.pages == []


def test_each_id_answered_once(learner: Learner, store: RecordingStore) -> None:
    ex = run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["a"]), tools_page(1, ["evil"])))
    assert ex.learned == [("tools/list", 1)] and tool_names(store) == {"a"}


def test_duplicate_request_ids_are_ambiguous_and_ignored(learner: Learner, store: RecordingStore) -> None:
    ex = run(start(learner, [(1, "tools/list", True), (1, "prompts/list", True)]), sse(tools_page(1, ["a"])))
    assert ex.learned == [] and store.pages == []


# -- wrong shapes, statuses, garbage -------------------------------------------------------------

@pytest.mark.parametrize("result", [
    {"tools": "nope"}, {"tools": {"a": {}}}, {}, {"prompts": []},
])
def test_wrong_result_shapes_ignored(learner: Learner, store: RecordingStore, result: Any) -> None:
    ex = run(start(learner, [(1, "tools/list", True)]), sse({"jsonrpc": "2.0", "id": 1, "result": result}))
    assert ex.learned == [] and store.pages == []


@pytest.mark.parametrize("result", [None, [], "x", 3])
def test_result_not_an_object_ignored(learner: Learner, store: RecordingStore, result: Any) -> None:
    ex = run(start(learner, [(1, "tools/list", True)]), sse({"jsonrpc": "2.0", "id": 1, "result": result}))
    assert ex.learned == [] and store.pages == []


def test_non_dict_items_skipped(learner: Learner, store: RecordingStore) -> None:
    page = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        "a", 1, None, [], {"name": "ok", "inputSchema": {"type": "object"}}, {"name": 5}]}}
    ex = run(start(learner, [(1, "tools/list", True)]), sse(page))
    assert ex.learned == [("tools/list", 2)]
    assert tool_names(store) == {"ok"}


@pytest.mark.parametrize("status,headers", [
    (500, SSE), (404, JSON), (401, JSON), (302, JSON), (None, JSON), ("abc", JSON),
    (200, {"content-type": "text/html"}), (200, {}),
    (200, {"content-type": "application/json", "content-encoding": "gzip"}),
])
def test_unlearnable_responses_ignored(learner: Learner, store: RecordingStore, status: Any,
                                       headers: dict[str, str]) -> None:
    body = orjson.dumps(tools_page(1, ["a"]))
    ex = run(start(learner, [(1, "tools/list", True)]), body, headers, status=status)
    assert ex.learned == [] and store.pages == [] and ex.abandoned


def test_content_type_parameters_and_case(learner: Learner, store: RecordingStore) -> None:
    ex = run(start(learner, [(1, "tools/list", True)]), sse(tools_page(1, ["a"])),
             {"Content-Type": "Text/Event-Stream; charset=utf-8"})
    assert ex.learned == [("tools/list", 1)]


GARBAGE = [
    b"", b"\x00\xff\xfe garbage", b"{", b'{"jsonrpc":"2.0","id":1,"result":{"tools":[', b"null", b"[]", b'"x"',
    b"[1,2,3]", b"NaN", b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":{}}]}}garbage',
    b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\xff","inputSchema":{}}]}}',  # invalid UTF-8
    b"[" * 100_000 + b"]" * 100_000,                                                    # deep nesting
    b"data: x\n\n",                                                                     # SSE in a JSON response
]


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("headers", [JSON, SSE], ids=["json", "sse"])
def test_garbage_bodies_never_raise(learner: Learner, store: RecordingStore, body: bytes,
                                    headers: dict[str, str]) -> None:
    for payload in (body, b"event: message\ndata: " + body + b"\n\n"):
        ex = run(start(learner, [(1, "tools/list", True)]), payload, headers, chunk=4096)
        assert ex.learned == [] and store.pages == []


def test_store_failure_is_logged_not_raised(learner: Learner, store: RecordingStore,
                                            caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("store down")
    monkeypatch.setattr(store, "apply_page", boom)
    with caplog.at_level(logging.ERROR, "extauthz.specs.exchange"):
        ex = run(start(learner, [(1, "tools/list", True), (2, "initialize", True)]),
                 sse(tools_page(1, ["a"]), {"jsonrpc": "2.0", "id": 2, "result": {"protocolVersion": "x"}}))
    assert ex.learned == [("initialize", 1)]             # the failure did not stop the next message
    assert "failed to learn tools/list" in caplog.text


def test_body_before_headers_ignored(learner: Learner, store: RecordingStore) -> None:
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_body(orjson.dumps(tools_page(1, ["a"])), True)
    assert ex.learned == [] and store.pages == []


def test_json_body_without_end_of_stream_parsed_on_close(learner: Learner, store: RecordingStore) -> None:
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, JSON)
    ex.on_body(orjson.dumps(tools_page(1, ["a"])), False)
    assert ex.learned == []
    ex.close()
    assert ex.learned == [("tools/list", 1)]
    ex.close()                                            # idempotent
    assert ex.learned == [("tools/list", 1)]


def test_stops_parsing_once_everything_answered(learner: Learner, monkeypatch) -> None:
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, SSE)
    ex.on_body(sse(tools_page(1, ["a"])), False)
    assert ex.done and ex._sse is None
    ex.on_body(b"data: " + b"x" * 1000 + b"\n\n", False)  # rest of the stream: ignored cheaply
    ex.on_body(b"", True)
    assert ex.learned == [("tools/list", 1)]


# -- bounds --------------------------------------------------------------------------------------

def test_nine_mib_json_abandoned(learner: Learner, store: RecordingStore, caplog: pytest.LogCaptureFixture) -> None:
    page = tools_page(1, ["a"])
    page["result"]["tools"][0]["description"] = "d" * (9 * 1024 * 1024)
    body = orjson.dumps(page)
    with caplog.at_level(logging.WARNING, "extauthz.specs.exchange"):
        ex = run(start(learner, [(1, "tools/list", True)]), body, JSON, chunk=64 * 1024)
    assert ex.abandoned == "body too large" and ex.learned == [] and store.pages == []
    assert len(ex._buf) == 0
    assert "exceeds" in caplog.text


def test_huge_json_stream_memory_is_bounded(learner: Learner) -> None:
    ex = start(learner, [(1, "tools/list", True)])
    ex.on_response_headers(200, JSON)
    chunk = b"x" * (256 * 1024)
    tracemalloc.start()
    try:
        for _ in range(256):                                # 64 MiB
            ex.on_body(chunk, False)
        ex.on_body(b"", True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.abandoned == "body too large"
    assert peak < 10 * 1024 * 1024


def test_oversized_sse_event_dropped_other_events_learned(store: RecordingStore,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    learner = Learner(store, lambda: "quarantine", max_event_bytes=64 * 1024)
    big = tools_page(1, ["big"])
    big["result"]["tools"][0]["description"] = "d" * (100 * 1024)
    with caplog.at_level(logging.WARNING, "extauthz.specs.exchange"):
        ex = run(start(learner, [(1, "tools/list", True), (2, "prompts/list", True)]),
                 sse(big, {"jsonrpc": "2.0", "id": 2, "result": {"prompts": [{"name": "p"}]}}), SSE, chunk=8192)
    assert ex.learned == [("prompts/list", 1)]
    assert tool_names(store) == set()
    assert "dropped 1 SSE event" in caplog.text
