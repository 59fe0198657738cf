"""SseParser: events straddling chunks anywhere, line endings, fields, bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extauthz.mcp.sse import SseEvent, SseParser

DATA = json.loads((Path(__file__).parent / "data" / "crm_sdk_responses.json").read_text())

SDK_TOOLS = (
    b'event: message\r\ndata: {"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_customer",'
    b'"description":"Look up one customer by id.","inputSchema":{"properties":{"customer_id":'
    b'{"title":"Customer Id","type":"string"}},"required":["customer_id"],"type":"object"}}]}}\r\n\r\n'
)
SDK_TOOLS_DATA = SDK_TOOLS[len(b"event: message\r\ndata: "):-4]


def parse_all(body: bytes, splits: list[int] | None = None, *, max_event_bytes: int = 1 << 20,
              close: bool = True) -> tuple[list[SseEvent], SseParser]:
    p = SseParser(max_event_bytes)
    out: list[SseEvent] = []
    cuts = [0, *(splits or []), len(body)]
    for a, b in zip(cuts, cuts[1:]):
        out += p.feed(body[a:b])
    if close:
        out += p.close()
    return out, p


def one_byte_chunks(body: bytes) -> list[SseEvent]:
    return parse_all(body, list(range(1, len(body))))[0]


def test_sdk_tools_list_whole() -> None:
    events, _ = parse_all(SDK_TOOLS)
    assert events == [SseEvent("message", SDK_TOOLS_DATA, "", None)]
    assert json.loads(events[0].data)["result"]["tools"][0]["name"] == "lookup_customer"


@pytest.mark.parametrize("cut", range(1, len(SDK_TOOLS)))
def test_sdk_tools_list_split_at_every_byte(cut: int) -> None:
    events, p = parse_all(SDK_TOOLS, [cut])
    assert events == [SseEvent("message", SDK_TOOLS_DATA)]
    assert p.dropped == 0


def test_sdk_tools_list_one_byte_chunks() -> None:
    assert one_byte_chunks(SDK_TOOLS) == [SseEvent("message", SDK_TOOLS_DATA)]


@pytest.mark.parametrize("key", [k for k in DATA if k.startswith("sse:")])
def test_every_captured_sdk_sse_response_in_every_two_way_split(key: str) -> None:
    body = DATA[key]["body"].encode()
    expect = parse_all(body)[0]
    assert len(expect) == 1 and expect[0].event == "message"
    json.loads(expect[0].data)
    step = max(1, len(body) // 300)          # big bodies: a few hundred cut points is plenty
    for cut in range(1, len(body), step):
        assert parse_all(body, [cut])[0] == expect


MULTI = (
    b": keep-alive comment\r\n"
    b"retry: 3000\r\n"
    b"\r\n"                                              # blank line with no data: nothing dispatched
    b"event: message\r\nid: e1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n"
    b"data: line one\ndata: line two\ndata\n\n"          # LF endings, multi-line data, bare "data"
    b"event: endpoint\rdata: /messages?x=1\r\r"          # CR endings, custom type
    b"data:no-space\r\ndata:  two-spaces\r\n\r\n"        # only one leading space is stripped
    b"id: e2\nevent: message\ndata: {\"id\":2}\n\n"
)
MULTI_EXPECT = [
    SseEvent("message", b'{"jsonrpc":"2.0","method":"notifications/progress"}', "e1", 3000),
    SseEvent("message", b"line one\nline two\n", "e1", 3000),
    SseEvent("endpoint", b"/messages?x=1", "e1", 3000),
    SseEvent("message", b"no-space\n two-spaces", "e1", 3000),
    SseEvent("message", b'{"id":2}', "e2", 3000),
]


def test_multi_event_stream() -> None:
    events, p = parse_all(MULTI)
    assert events == MULTI_EXPECT
    assert p.retry == 3000 and p.last_event_id == "e2"


@pytest.mark.parametrize("cut", range(1, len(MULTI)))
def test_multi_event_stream_every_split(cut: int) -> None:
    assert parse_all(MULTI, [cut])[0] == MULTI_EXPECT


def test_multi_event_stream_three_way_splits() -> None:
    for a in range(1, len(MULTI), 7):
        for b in range(a + 1, len(MULTI), 5):
            assert parse_all(MULTI, [a, b])[0] == MULTI_EXPECT, (a, b)


def test_multi_event_stream_one_byte_chunks() -> None:
    assert one_byte_chunks(MULTI) == MULTI_EXPECT


@pytest.mark.parametrize("sep", [b"\r\n", b"\n", b"\r"])
def test_line_endings_equivalent(sep: bytes) -> None:
    body = sep.join([b"event: message", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert one_byte_chunks(body) == [SseEvent("message", b"a\nb"), SseEvent("message", b"c")]


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    p = SseParser()
    assert p.feed(b"data: x\r") == []
    assert p.feed(b"\n") == []            # the LF completes the CRLF, it is not a blank line
    assert p.feed(b"\r") == [SseEvent("message", b"x")]   # blank line: dispatch now...
    assert p.feed(b"\ndata: y\r\n\r\n") == [SseEvent("message", b"y")]  # ...and skip its LF


def test_cr_cr_is_two_line_ends() -> None:
    p = SseParser()
    assert p.feed(b"data: x\r") == []
    assert p.feed(b"\r") == [SseEvent("message", b"x")]


@pytest.mark.parametrize("splits", [[], [1], [2], [3], [1, 2], [4]])
def test_bom_at_start_is_stripped_wherever_it_is_split(splits: list[int]) -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    assert parse_all(body, splits)[0] == [SseEvent("message", b"x")]


def test_bom_only_at_start() -> None:
    body = b"data: x\n\n\xef\xbb\xbfdata: y\n\n"
    # a BOM later in the stream is part of a field name ("\ufeffdata"): ignored
    assert parse_all(body)[0] == [SseEvent("message", b"x")]


def test_incomplete_event_discarded_at_close() -> None:
    events, p = parse_all(b"data: complete\n\ndata: partial", close=False)
    assert events == [SseEvent("message", b"complete")]
    assert p.close() == []
    assert p.feed(b"\n\n") == []          # closed parser takes nothing more


def test_id_with_nul_ignored_and_id_persists() -> None:
    events, _ = parse_all(b"id: a\ndata: 1\n\nid: b\x00c\ndata: 2\n\nid\ndata: 3\n\n")
    assert [e.id for e in events] == ["a", "a", ""]


def test_retry_must_be_digits() -> None:
    _, p = parse_all(b"retry: 12x\nretry: 500\nretry: nope\ndata: x\n\n")
    assert p.retry == 500


def test_unknown_fields_and_comments_ignored() -> None:
    events, _ = parse_all(b":c1\nfoo: bar\n: c2\ndata: x\nbaz\n\n")
    assert events == [SseEvent("message", b"x")]


def test_event_type_resets_between_events() -> None:
    events, _ = parse_all(b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n")
    assert [e.event for e in events] == ["a", "message", "message"]


# -- size bound -------------------------------------------------------------------------------

def test_oversized_event_dropped_and_flagged_then_parsing_resumes() -> None:
    big = b"data: " + b"x" * 5000 + b"\r\n\r\n"
    body = b"data: before\r\n\r\n" + big + b"data: after\r\n\r\n"
    for splits in ([], list(range(1, len(body), 13)), list(range(1, len(body)))):
        events, p = parse_all(body, splits, max_event_bytes=1024)
        assert events == [SseEvent("message", b"before"), SseEvent("message", b"after")]
        assert p.dropped == 1
        assert p.buffered_bytes == 0


def test_oversized_by_many_data_lines() -> None:
    body = b"".join(b"data: " + b"y" * 100 + b"\n" for _ in range(50)) + b"\ndata: ok\n\n"
    events, p = parse_all(body, list(range(1, len(body), 17)), max_event_bytes=1024)
    assert events == [SseEvent("message", b"ok")] and p.dropped == 1


def test_event_at_exact_bound_kept() -> None:
    events, p = parse_all(b"data: " + b"z" * 1000 + b"\n\n", max_event_bytes=1000)
    assert len(events) == 1 and len(events[0].data) == 1000 and p.dropped == 0
    events, p = parse_all(b"data: " + b"z" * 1001 + b"\n\n", max_event_bytes=1000)
    assert events == [] and p.dropped == 1


def test_buffer_never_exceeds_bound_while_streaming_huge_event() -> None:
    p = SseParser(64 * 1024)
    p.feed(b"event: message\ndata: ")
    peak = 0
    for _ in range(2000):                 # ~16 MB of one line, fed in 8 KiB chunks
        assert p.feed(b"a" * 8192) == []
        peak = max(peak, p.buffered_bytes)
    assert peak <= 64 * 1024 + 64        # the bound plus room for a field name
    assert p.feed(b"\n\ndata: next\n\n") == [SseEvent("message", b"next")]
    assert p.dropped == 1


def test_oversized_comment_does_not_cost_the_event() -> None:
    body = b"data: keep\n:" + b"c" * 4000 + b"\n\n"
    events, p = parse_all(body, list(range(1, len(body), 97)), max_event_bytes=1024)
    assert events == [SseEvent("message", b"keep")] and p.dropped == 0


def test_bad_bound_rejected() -> None:
    with pytest.raises(ValueError):
        SseParser(0)
