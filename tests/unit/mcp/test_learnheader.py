"""The learn header round-trips: what ext_authz encodes (extauthz.mcp.learnheader), ext_proc decodes
back to the same entries, marks and view, for every form the header takes."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.mcp.learnheader import (
    END_MARK,
    STREAM_MARK,
    LearnEntry,
    decode_end_mark,
    decode_learn,
    decode_stream_mark,
    encode_learn_header,
    end_mark,
    id_digest,
    id_key,
    stream_mark,
)
from extauthz.specs.listfilter import View, fingerprint

VIEW = View("https://issuer", "alice", "agent", ("ops", "sales"))
LONG_ID = "x" * 41                       # over ID_INLINE_CHARS: travels as its digest


@pytest.mark.parametrize(("entries", "expected"), [
    ([(1, "tools/list", True)], [LearnEntry(1, "tools/list", True)]),
    ([("a-2", "prompts/list", False)], [LearnEntry("a-2", "prompts/list", False)]),
    ([(3, "initialize", True), (4, "server/discover", True)],
     [LearnEntry(3, "initialize", True), LearnEntry(4, "server/discover", True)]),
    ([(LONG_ID, "resources/list", True)], [LearnEntry(("h", id_digest(LONG_ID)), "resources/list", True)]),
    ([(7, "tools/call", "lookup")], [LearnEntry(7, "tools/call", False, "lookup")]),
    ([("r", "resources/read", "crm://x/1"), (8, "tools/list", True)],
     [LearnEntry("r", "resources/read", False, "crm://x/1"), LearnEntry(8, "tools/list", True)]),
], ids=["learn-int-id", "learn-str-id", "learn-info", "learn-long-id", "observe", "observe-and-learn"])
@pytest.mark.parametrize("view", [None, fingerprint(VIEW), VIEW], ids=["no-view", "fingerprint", "view"])
def test_learn_and_observe_entries_round_trip(entries: list[tuple[Any, str, bool | str]],
                                              expected: list[LearnEntry], view: View | str | None) -> None:
    assert decode_learn(encode_learn_header(entries, view), View.from_json) == (expected, view)


def test_a_view_alone_round_trips() -> None:
    """A resumed stream: no entries, lists filtered by their shape for this view."""
    assert decode_learn(encode_learn_header([], fingerprint(VIEW)), View.from_json) == ([], fingerprint(VIEW))
    assert decode_learn(encode_learn_header([]), View.from_json) is None


def test_a_long_id_and_its_response_compare_by_digest() -> None:
    decoded = decode_learn(encode_learn_header([(LONG_ID, "tools/list", True)]), View.from_json)
    assert decoded is not None
    assert id_key(decoded[0][0].id) == id_key(LONG_ID) == ("h", id_digest(LONG_ID))
    assert id_key(2) != id_key("2") and id_key(True) is None


@pytest.mark.parametrize("view", [fingerprint(VIEW), VIEW], ids=["fingerprint", "view"])
def test_stream_marks_round_trip(view: View | str) -> None:
    assert stream_mark(None) == STREAM_MARK
    assert decode_stream_mark(stream_mark(view), View.from_json) == view
    assert decode_stream_mark(stream_mark(view)[:-3] + "!!!", View.from_json) is None


@pytest.mark.parametrize("sid", ["s1", "0f6c2b9e-5d1a-4c7e-9a44-2f7d3c1b8e60", "~" * 1024])
def test_end_marks_round_trip(sid: str) -> None:
    mark = end_mark(sid)
    assert mark.startswith(END_MARK + ":") and decode_end_mark(mark) == sid == decode_end_mark(mark.encode())


def test_a_view_the_parser_rejects_makes_the_header_invalid() -> None:
    value = encode_learn_header([(1, "tools/list", True)], VIEW)
    assert decode_learn(value, lambda v: None) is None
    assert decode_stream_mark(stream_mark(VIEW), lambda v: None) is None
