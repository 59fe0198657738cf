"""BodyRewriter: JSON bodies held and rewritten whole; SSE events rewritten one by one, byte-exact
for everything it does not change, whatever the chunking."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from extauthz.mcp.rewrite import MAX_HELD_BYTES, BodyRewriter
from extauthz.mcp.sse import SseParser

# -- helpers ---------------------------------------------------------------------------------------

CHANGE_IDS = {1, "x", 7}        # the transform rewrites list results with these ids only


def drop_secret(msg: dict[str, Any]) -> dict[str, Any] | None:
    """Remove tools named secret* from list results of CHANGE_IDS; None when nothing changes."""
    rid = msg.get("id")
    if isinstance(rid, bool) or rid not in CHANGE_IDS:
        return None
    result = msg["result"]
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return None
    kept = [t for t in result["tools"] if not str(t.get("name", "")).startswith("secret")]
    if len(kept) == len(result["tools"]):
        return None
    return {**msg, "result": {**result, "tools": kept}}


def tools_msg(rid: Any, names: list[str], **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": n} for n in names], **extra}}


def feed_all(rw: BodyRewriter, chunks: list[bytes]) -> bytes:
    out = bytearray()
    for i, c in enumerate(chunks):
        out += rw.feed(c, i == len(chunks) - 1)
    return bytes(out)


def whole(mode: str, body: bytes, transform=drop_secret, **kw: Any) -> bytes:
    return BodyRewriter(mode, transform, **kw).feed(body, True)


def parse_events(data: bytes) -> list[Any]:
    p = SseParser()
    return p.feed(data)


# A stream exercising every framing feature. Each entry: (raw event bytes, expected message after
# rewrite or None when the event must come out byte-for-byte unchanged).
M1 = tools_msg(1, ["lookup", "secret_dump", "search"], nextCursor="c2")
M2 = tools_msg(2, ["secret_but_not_mine"])                      # id not ours: unchanged
M7 = tools_msg(7, ["a", "secret_b", "c"])
MX = tools_msg("x", ["secret_only"])
M1_OUT = drop_secret(M1)
M7_OUT = drop_secret(M7)
MX_OUT = drop_secret(MX)


def _multiline(msg: dict[str, Any], eol: bytes) -> bytes:
    """The JSON split over several data: lines (legal: data lines are joined with \\n)."""
    text = orjson.dumps(msg, option=orjson.OPT_INDENT_2)
    return eol.join(b"data: " + ln for ln in text.split(b"\n"))


STREAM_EVENTS: list[tuple[bytes, dict[str, Any] | None]] = [
    (b": keep-alive comment\n\n", None),
    (b"event: message\r\nid: 41\r\ndata: " + orjson.dumps(M1) + b"\r\n\r\n", M1_OUT),
    (b"data: " + orjson.dumps(M2) + b"\n\n", None),
    (b"event: ping\ndata: " + orjson.dumps(M7) + b"\n\n", None),        # not a message event
    (b"id: 9\r" + _multiline(M7, b"\r") + b"\r\r", M7_OUT),              # CR endings, multi-line data
    (b"data: this is not json\n\n", None),
    (b"retry: 1500\r\n\r\n", None),
    (b"data: " + orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"p": 1}}) + b"\n\n", None),     # no result
    (b": c1\n" + _multiline(MX, b"\n") + b"\n: c2\n\n", MX_OUT),          # comments around data
    (b"data:" + orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "m"}})
     + b"\r\n\r\n", None),                                               # error, no result
    (b"event:message\ndata:" + orjson.dumps(tools_msg(1, ["fine"])) + b"\n\n", None),  # nothing to drop
]
STREAM = b"".join(raw for raw, _ in STREAM_EVENTS)


def check_stream_output(out: bytes, events: list[tuple[bytes, dict[str, Any] | None]]) -> None:
    """Unchanged events byte for byte, in order; changed ones parse back to the transform's result."""
    pos = 0
    for raw, expected in events:
        if expected is None:
            assert out[pos:pos + len(raw)] == raw
            pos += len(raw)
            continue
        end = out.index(b"\n\n", pos) + 2
        seg = out[pos:end]
        evs = parse_events(seg)
        assert len(evs) == 1
        assert evs[0].event == "message"
        assert orjson.loads(evs[0].data) == expected
        orig = parse_events(raw)
        assert len(orig) == 1 and evs[0].id == orig[0].id          # id: lines survive the rewrite
        pos = end
    assert pos == len(out)


# -- construction ------------------------------------------------------------------------------------

def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        BodyRewriter("xml", drop_secret)


def test_default_bound_is_the_module_constant():
    assert BodyRewriter("json", drop_secret).max_held == MAX_HELD_BYTES


# -- JSON mode -----------------------------------------------------------------------------------------

def test_json_is_held_until_end_then_rewritten_whole():
    body = orjson.dumps(M1)
    rw = BodyRewriter("json", drop_secret)
    outs = [rw.feed(body[i:i + 7], False) for i in range(0, len(body), 7)]
    assert all(o == b"" for o in outs)
    final = rw.feed(b"", True)
    assert orjson.loads(final) == M1_OUT
    assert rw.rewrote == 1


def test_json_last_chunk_carrying_data_is_included():
    body = orjson.dumps(M1)
    rw = BodyRewriter("json", drop_secret)
    assert rw.feed(body[:10], False) == b""
    assert orjson.loads(rw.feed(body[10:], True)) == M1_OUT


def test_json_unchanged_message_passes_byte_for_byte():
    body = b'{ "jsonrpc" : "2.0", "id": 2, "result": {"tools": [{"name": "secret"}]} }'
    rw = BodyRewriter("json", drop_secret)
    assert rw.feed(body[:5], False) == b""
    assert rw.feed(body[5:], True) == body
    assert rw.rewrote == 0


@pytest.mark.parametrize("body", [
    b"<html>not json</html>",
    b'{"jsonrpc": "2.0", "id": 1, "result": {"tools": [',        # truncated
    b"\xff\xfe{}",                                               # invalid UTF-8
    b"",
    b'"just a string"',
    b"42",
])
def test_json_unreadable_body_passes_unchanged(body):
    assert whole("json", body) == body


def test_json_message_without_result_is_not_offered_to_transform():
    calls: list[Any] = []

    def spy(msg):
        calls.append(msg)
        return {"replaced": True}

    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}})
    assert whole("json", body, spy) == body
    assert calls == []


def test_json_batch_rewrites_only_changed_elements():
    batch = [M1, M2, {"jsonrpc": "2.0", "method": "notifications/x"}, "junk", MX]
    out = whole("json", orjson.dumps(batch))
    assert orjson.loads(out) == [M1_OUT, M2, batch[2], "junk", MX_OUT]


def test_json_batch_counts_rewritten_messages():
    rw = BodyRewriter("json", drop_secret)
    rw.feed(orjson.dumps([M1, M2, M7]), True)
    assert rw.rewrote == 2


def test_json_batch_with_nothing_changed_is_byte_identical():
    body = b'[ {"jsonrpc":"2.0","id":2,"result":{"tools":[]}} , {"jsonrpc":"2.0","id":3,"result":{}} ]'
    assert whole("json", body) == body


def test_json_transform_exception_passes_unchanged():
    def boom(msg):
        raise RuntimeError("transform bug")

    body = orjson.dumps(M1)
    rw = BodyRewriter("json", boom)
    assert rw.feed(body, True) == body
    assert rw.rewrote == 0


def test_json_transform_exception_in_one_batch_element_spares_the_others():
    def picky(msg):
        if msg["id"] == 1:
            raise KeyError("x")
        return drop_secret(msg)

    batch = [M1, M7]
    assert orjson.loads(whole("json", orjson.dumps(batch), picky)) == [M1, M7_OUT]


def test_json_over_bound_gives_up_without_losing_a_byte():
    body = orjson.dumps(M1)
    rw = BodyRewriter("json", drop_secret, max_held=20)
    chunks = [body[i:i + 8] for i in range(0, len(body), 8)]
    out = feed_all(rw, chunks)
    assert out == body
    assert rw.gave_up is True
    assert rw.rewrote == 0


def test_json_gives_up_on_the_chunk_that_crosses_the_bound_then_passes_through():
    rw = BodyRewriter("json", drop_secret, max_held=10)
    assert rw.feed(b"0123456789", False) == b""           # exactly at the bound: still held
    assert rw.gave_up is False
    assert rw.feed(b"A", False) == b"0123456789A"         # over: everything held comes out
    assert rw.gave_up is True
    assert rw.feed(b"BC", False) == b"BC"
    assert rw.feed(b"", True) == b""


def test_json_over_bound_in_a_single_final_chunk_passes_unchanged():
    body = orjson.dumps(M1)
    assert whole("json", body, max_held=len(body) - 1) == body
    assert orjson.loads(whole("json", body, max_held=len(body))) == M1_OUT


# -- SSE mode: basics ------------------------------------------------------------------------------------

def test_sse_whole_stream_matches_expectations():
    rw = BodyRewriter("sse", drop_secret)
    out = rw.feed(STREAM, True)
    check_stream_output(out, STREAM_EVENTS)
    assert rw.rewrote == 3
    assert out != STREAM


def test_sse_complete_events_pass_on_immediately_and_partial_waits():
    e1 = b"data: " + orjson.dumps(M2) + b"\n\n"
    rw = BodyRewriter("sse", drop_secret)
    assert rw.feed(e1 + b"data: {\"part", False) == e1
    assert rw.feed(b"ial\": 1}\n", False) == b""
    assert rw.feed(b"\n", False) == b'data: {"partial": 1}\n\n'


def test_sse_changed_event_comes_out_when_it_completes():
    raw = b"event: message\ndata: " + orjson.dumps(M1) + b"\n\n"
    rw = BodyRewriter("sse", drop_secret)
    assert rw.feed(raw[:-1], False) == b""
    out = rw.feed(raw[-1:], False)
    evs = parse_events(out)
    assert [orjson.loads(e.data) for e in evs] == [M1_OUT]


def test_sse_incomplete_tail_is_flushed_unchanged_at_end():
    tail = b"data: " + orjson.dumps(M1)                    # never terminated
    rw = BodyRewriter("sse", drop_secret)
    assert rw.feed(tail, False) == b""
    assert rw.feed(b"", True) == tail
    assert rw.rewrote == 0


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_each_line_ending_style_is_recognised(eol):
    raw = b"event: message" + eol + b"id: 3" + eol + b"data: " + orjson.dumps(M1) + eol + eol
    out = whole("sse", raw)
    evs = parse_events(out)
    assert len(evs) == 1
    assert orjson.loads(evs[0].data) == M1_OUT
    assert evs[0].id == "3"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_unchanged_events_keep_their_line_endings(eol):
    raw = b"id: 3" + eol + b"data: " + orjson.dumps(M2) + eol + eol
    assert whole("sse", raw * 3) == raw * 3


def test_sse_other_event_types_are_never_rewritten():
    raw = b"event: endpoint\ndata: " + orjson.dumps(M1) + b"\n\n"
    assert whole("sse", raw) == raw


def test_sse_data_with_and_without_space_after_colon():
    a = b"data:" + orjson.dumps(M1) + b"\n\n"
    b = b"data: " + orjson.dumps(M1) + b"\n\n"
    assert orjson.loads(parse_events(whole("sse", a))[0].data) == M1_OUT
    assert orjson.loads(parse_events(whole("sse", b))[0].data) == M1_OUT


def test_sse_transform_exception_passes_event_unchanged():
    def boom(msg):
        raise ValueError("nope")

    rw = BodyRewriter("sse", boom)
    assert rw.feed(STREAM, True) == STREAM
    assert rw.rewrote == 0


def test_sse_batch_array_in_an_event_is_rewritten_per_message():
    # a 2025-03-26 batch answered over SSE: each message in the array is offered, as in JSON mode
    raw = b"data: " + orjson.dumps([M1, M2]) + b"\n\n"
    assert orjson.loads(parse_events(whole("sse", raw))[0].data) == [M1_OUT, M2]


def test_sse_over_bound_gives_up_without_losing_a_byte():
    rw = BodyRewriter("sse", drop_secret, max_held=40)
    chunks = [STREAM[i:i + 16] for i in range(0, len(STREAM), 16)]
    out = feed_all(rw, chunks)
    assert out == STREAM                  # M1's event is longer than the bound: all passes as is
    assert rw.gave_up is True


def test_sse_bound_counts_only_the_partial_event_held():
    small = b"data: " + orjson.dumps(M2) + b"\n\n"                    # complete events leave the buffer
    rw = BodyRewriter("sse", drop_secret, max_held=len(small) + 5)
    out = feed_all(rw, [small] * 50 + [b""])
    assert out == small * 50
    assert rw.gave_up is False


def test_sse_rewritten_after_give_up_is_not_attempted():
    rw = BodyRewriter("sse", drop_secret, max_held=10)
    first = b"data: 0123456789abc"
    assert rw.feed(first, False) == first
    later = b"\n\ndata: " + orjson.dumps(M1) + b"\n\n"
    assert rw.feed(later, True) == later
    assert rw.rewrote == 0


# -- SSE mode: every chunking gives the same bytes ------------------------------------------------------

@pytest.fixture(scope="module")
def expected_stream_out() -> bytes:
    out = BodyRewriter("sse", drop_secret).feed(STREAM, True)
    check_stream_output(out, STREAM_EVENTS)
    return out


def test_sse_split_at_every_byte_boundary(expected_stream_out):
    for i in range(len(STREAM) + 1):
        rw = BodyRewriter("sse", drop_secret)
        out = rw.feed(STREAM[:i], False) + rw.feed(STREAM[i:], True)
        assert out == expected_stream_out, f"split at {i}"
        assert rw.rewrote == 3


def test_sse_split_at_every_byte_boundary_then_empty_end(expected_stream_out):
    for i in range(len(STREAM) + 1):
        rw = BodyRewriter("sse", drop_secret)
        out = rw.feed(STREAM[:i], False) + rw.feed(STREAM[i:], False) + rw.feed(b"", True)
        assert out == expected_stream_out, f"split at {i}"


def test_sse_byte_at_a_time(expected_stream_out):
    rw = BodyRewriter("sse", drop_secret)
    out = b"".join(rw.feed(STREAM[i:i + 1], False) for i in range(len(STREAM))) + rw.feed(b"", True)
    assert out == expected_stream_out


def test_sse_random_multi_split_chunkings(expected_stream_out):
    rng = random.Random(20261125)
    for trial in range(300):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 25)))
        bounds = [0, *cuts, len(STREAM)]
        chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:])]
        rw = BodyRewriter("sse", drop_secret)
        out = feed_all(rw, chunks)
        assert out == expected_stream_out, f"trial {trial}: cuts {cuts}"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_every_split_per_line_ending_style(eol):
    events = [
        (b"id: 1" + eol + b"data: " + orjson.dumps(M1) + eol + eol, M1_OUT),
        (b": hi" + eol + eol, None),
        (b"event: message" + eol + _multiline(M7, eol) + eol + eol, M7_OUT),
        (b"data: " + orjson.dumps(M2) + eol + eol, None),
    ]
    stream = b"".join(raw for raw, _ in events)
    ref = whole("sse", stream)
    check_stream_output(ref, events)
    for i in range(len(stream) + 1):
        rw = BodyRewriter("sse", drop_secret)
        assert rw.feed(stream[:i], False) + rw.feed(stream[i:], True) == ref, f"{eol!r} split at {i}"


def test_sse_unchanged_only_stream_is_identity_under_any_chunking():
    events = [raw for raw, exp in STREAM_EVENTS if exp is None]
    stream = b"".join(events)
    rng = random.Random(7)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 10)))
        bounds = [0, *cuts, len(stream)]
        rw = BodyRewriter("sse", drop_secret)
        assert feed_all(rw, [stream[a:b] for a, b in zip(bounds, bounds[1:])]) == stream


def test_sse_output_parses_to_the_same_number_of_events(expected_stream_out):
    assert len(parse_events(expected_stream_out)) == len(parse_events(STREAM))


# -- SSE framing as the SSE standard defines it (where the rewriter disagrees with SseParser) ----------

@pytest.mark.parametrize("ending", [b"\n\r\n", b"\n\r", b"\r\n\r"], ids=["LF+CRLF", "LF+CR", "CRLF+CR"])
def test_sse_event_ended_by_mixed_line_endings_is_rewritten(ending):
    """A line may end in CRLF, LF or CR, freely mixed: 'data: ...\\n' followed by the blank line
    '\\r\\n' ends an event (SseParser, which learns from the same bytes, dispatches it)."""
    raw = b"data: " + orjson.dumps(M1) + ending
    follow = b"data: " + orjson.dumps(M2) + b"\n\n"
    assert [orjson.loads(e.data) for e in parse_events(raw + follow)] == [M1, M2]
    out = whole("sse", raw + follow)
    assert [orjson.loads(e.data) for e in parse_events(out)] == [M1_OUT, M2]


def test_sse_leading_byte_order_mark_does_not_hide_the_first_event():
    """The SSE standard strips one leading U+FEFF; SseParser does. The first event is still a message."""
    raw = b"\xef\xbb\xbfdata: " + orjson.dumps(M1) + b"\n\n"
    assert [orjson.loads(e.data) for e in parse_events(raw)] == [M1]
    out = whole("sse", raw)
    assert [orjson.loads(e.data) for e in parse_events(out)] == [M1_OUT]


MIXED_EVENTS: list[tuple[bytes, dict[str, Any] | None]] = [
    (b"data: " + orjson.dumps(M1) + b"\n\r\n", M1_OUT),                      # LF line, CRLF blank line
    (b"data: " + orjson.dumps(M2) + b"\r\n\n", None),                        # CRLF line, LF blank line
    (b"id: 5\r\ndata: " + orjson.dumps(M7) + b"\r\r\n", M7_OUT),             # CR line, CRLF blank line
    (b": note\n\r", None),                                                   # LF line, CR blank line
    (b"data: " + orjson.dumps(MX) + b"\r\n\r", MX_OUT),                      # CRLF line, CR blank line
    (b"data: " + orjson.dumps(M2) + b"\n\n", None),
]
MIXED = b"".join(raw for raw, _ in MIXED_EVENTS)


def test_sse_mixed_endings_stream_under_every_chunking():
    ref = whole("sse", MIXED)
    check_stream_output(ref, MIXED_EVENTS)
    assert len(parse_events(ref)) == len(parse_events(MIXED)) == len(MIXED_EVENTS) - 1   # the comment is no event
    for i in range(len(MIXED) + 1):
        rw = BodyRewriter("sse", drop_secret)
        assert rw.feed(MIXED[:i], False) + rw.feed(MIXED[i:], True) == ref, f"split at {i}"
    rng = random.Random(99)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(MIXED)), rng.randint(1, 30)))
        bounds = [0, *cuts, len(MIXED)]
        assert feed_all(BodyRewriter("sse", drop_secret), [MIXED[a:b] for a, b in zip(bounds, bounds[1:])]) == ref


def test_sse_bom_stream_under_every_chunking(expected_stream_out):
    stream = b"\xef\xbb\xbf" + STREAM
    ref = whole("sse", stream)
    assert [orjson.loads(e.data) if e.data.startswith(b"{") else e.data for e in parse_events(ref)] == \
        [orjson.loads(e.data) if e.data.startswith(b"{") else e.data for e in parse_events(b"\xef\xbb\xbf" + expected_stream_out)]
    for i in range(len(stream) + 1):
        rw = BodyRewriter("sse", drop_secret)
        assert rw.feed(stream[:i], False) + rw.feed(stream[i:], True) == ref, f"split at {i}"


def test_sse_cr_at_chunk_end_waits_for_a_possible_lf():
    raw = b"data: " + orjson.dumps(M2) + b"\r\n\r\n"
    rw = BodyRewriter("sse", drop_secret)
    assert rw.feed(raw[:-1], False) == b""                  # "\r\n\r": may be the start of "\r\n"
    assert rw.feed(raw[-1:], False) == raw                  # the whole event, terminator included


def test_sse_cr_only_event_is_released_by_the_next_byte_or_the_end():
    raw = b"data: " + orjson.dumps(M2) + b"\r\r"
    rw = BodyRewriter("sse", drop_secret)
    assert rw.feed(raw, False) == b""
    assert rw.feed(b"d", False) == raw                      # not an LF: the event was complete
    assert rw.feed(b"ata: 1\r\r", True) == b"data: 1\r\r"
