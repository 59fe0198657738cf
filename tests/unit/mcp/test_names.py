"""Invisible characters are one class: every code point with the property is refused, in names and
URIs, whatever its range. The oracle is Node's ECMA-262 `\\p{...}` (an independent Unicode table)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable

import pytest

from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.mcp.names import invisible, name_problem, uri_problem

from ..core.conftest import app, call, decide  # noqa: F401 - the decision-table fixtures

NODE = shutil.which("node")
if NODE is None:  # pragma: no cover - the test command installs node; a broken machine, not a skip
    raise RuntimeError("node is required: it is the independent Unicode oracle of this test")

# Node knows the property from its own ICU: every default-ignorable, control, format, private-use,
# surrogate and line/paragraph-separator code point, plus every space other than U+0020.
_ORACLE = r"""
const re = /[\p{Default_Ignorable_Code_Point}\p{Cc}\p{Cf}\p{Co}\p{Zl}\p{Zp}]|(?![ ])\p{Zs}/u;
const out = [];
for (let cp = 0; cp <= 0x10FFFF; cp++) {
  if (cp >= 0xD800 && cp <= 0xDFFF) continue;
  if (re.test(String.fromCodePoint(cp))) out.push(cp);
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def oracle() -> list[int]:
    out = subprocess.run([NODE, "-e", _ORACLE], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_oracle_covers_the_reported_examples(oracle: list[int]) -> None:
    wanted = {0xAD, 0x200D, 0x034F, 0x180E, 0x3164, 0xFE0F, 0xE0001, 0xE0041, 0xE007F, 0x2028, 0x202E, 0xFEFF}
    assert wanted <= set(oracle)


def test_every_code_point_with_the_property_is_refused_in_names_and_uris(oracle: list[int]) -> None:
    missed_names = [cp for cp in oracle if name_problem(f"tool{chr(cp)}name") is None]
    missed_uris = [cp for cp in oracle if uri_problem(f"crm://customers/c{chr(cp)}1") is None]
    assert missed_names == [] and missed_uris == [], (missed_names[:10], missed_uris[:10])
    assert len(oracle) > 4000        # the tag block, variation selectors and private use alone exceed it


def test_noncharacters_and_unassigned_are_refused() -> None:
    # Unassigned (Cn) text is refused, not guessed at; noncharacters stay unassigned for ever.
    nonchars = [*range(0xFDD0, 0xFDF0), *(p * 0x10000 + 0xFFFE for p in range(17)), *(p * 0x10000 + 0xFFFF for p in range(17))]
    assert all(invisible(chr(cp)) for cp in nonchars)


def test_visible_letters_marks_and_symbols_pass() -> None:
    for name in ("lookup_customer", "café", "客户查询", "Ünïcödé-tool", "naïve.v2", "emoji_🚀", "a b",
                 "ﬁle", "ℌ"):
        assert name_problem(name) is None, name
    # a sample of every assigned letter, digit, mark and symbol in the BMP passes (precision)
    refused = [cp for cp in range(0x20, 0x10000)
               if unicodedata.category(chr(cp))[0] in "LNMPS" and invisible(chr(cp))]
    visible_with_property = {0x115F, 0x1160, 0x3164, 0xFFA0, 0x034F, 0x17B4, 0x17B5} | set(range(0x180B, 0x1810)) \
        | set(range(0xFE00, 0xFE10))
    assert set(refused) <= visible_with_property, [hex(c) for c in refused if c not in visible_with_property][:10]


@pytest.mark.parametrize("cp", [0xAD, 0x200D, 0x200B, 0xE0041, 0xFE0F, 0x034F, 0x180E, 0x3164, 0x2060, 0xA0])
def test_decided_malformed_request_in_tool_calls(cp: int, decide: Callable[..., Decision]) -> None:
    d = decide(call(f"lookup{chr(cp)}_customer", {"customer_id": "c-100"}))
    assert d.reason is Reason.MALFORMED_REQUEST, (hex(cp), d.reason, d.detail)
    assert "invisible" in d.detail


def test_ascii_fast_path_agrees_with_the_property() -> None:
    for cp in range(0x80):
        assert invisible(chr(cp)) == (cp < 0x20 or cp == 0x7F), cp
    assert sys.maxunicode == 0x10FFFF
