"""Findings in published text that could carry a tool-poisoning or rug-pull payload (`scan`), and
which of them corroborate each other enough to hold a capability at first sight (`hold_reason`).
The cue classes and how they were measured: docs/detection.md."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex

from extauthz.detect.phrases import PHRASES

__all__ = ["Finding", "scan", "hold_reason", "hidden_instructions", "MAX_SCAN", "STRONG"]

MAX_SCAN = 200_000          # characters of one text examined
MAX_RUN_FLAGS = 16          # invisible-character runs reported one by one, then summarised
WHITESPACE_RUN = 120        # this many consecutive whitespace characters hide what follows
ZERO_WIDTH_RUN = 8          # zero-width characters in a row: enough to encode bits
STRONG = frozenset({"override", "conceal", "secret", "exfil", "redirect"})
CARRIERS = frozenset({"invisible", "markup"})


@dataclass(frozen=True, slots=True)
class Finding:
    at: int             # character position in the text (-1: in decoded hidden text)
    cls: str            # cue class (docs/detection.md)
    label: str          # what was found, never the server's text
    flag: str           # the human-readable flag, with its position
    smuggling: bool = False     # a carrier that only exists to hide text: holds alone
    alone: bool = False         # a phrase that is an attack when used, not quoted: holds alone


_MARKUP: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("html comment", re.compile(r"<!--")),
    ("hidden markup", re.compile(
        r"<\s*(important|system|system[-_ ]?prompt|instructions?|hidden|secret|admin|assistant|critical|override"
        r"|sudo|tool[-_ ]?instructions?)(?=[\s>/])[^<>]{0,200}>", re.I)),
    ("hidden style", re.compile(
        r"style\s*=\s*[\"'][^\"'<>]{0,200}?(?:display\s*:\s*none|visibility\s*:\s*hidden"
        r"|font-size\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?:\.0+)?(?![.\d]))", re.I)),
    ("markdown comment", re.compile(r"(?m)^\s*\[(?://|comment)\]\s*:\s*#")),
    ("chat-template token", re.compile(r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id"
                                       r"|start_header_id)\|>|\[/?INST\]|<</?SYS>>", re.I)),
)
# Characters that render as nothing: the Unicode properties, not a hand list (plus controls,
# separators and the braille blank, which is a symbol that renders empty).
_SUSPECT = regex.compile(r"[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}\p{Zl}\p{Zp}\u2800]")
ALONE = frozenset({"ignore previous instructions"})
_MENTION = re.compile(r"[\"'`\u2018\u201c\u00ab(]\s*$|\b(?:such\s+as|like|e\.g\.|as\s+in|phrases?|words?)\W*$")
_WS_RUN = re.compile(r"\s{%d,}" % WHITESPACE_RUN)  # noqa: UP031 (braces of a quantifier)
_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}
_ZERO_WIDTH = frozenset({0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x180E}) | frozenset(range(0x2061, 0x2065))


def _is_vs(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _symbol(ch: str) -> bool:
    return bool(ch) and (unicodedata.category(ch) in ("So", "Sk", "Sm") or 0x1F000 <= ord(ch) <= 0x1FAFF)


def _kind(text: str, i: int) -> str | None:
    """What hides at text[i], or None for an ordinary (or emoji-legitimate) character."""
    ch = text[i]
    cp = ord(ch)
    if ch in "\t\n\r":
        return None
    if 0xE0000 <= cp <= 0xE007F:
        return "unicode tag characters"
    if cp in _BIDI:
        return "bidi control"
    if _is_vs(cp):
        prev = text[i - 1] if i else ""
        if cp in (0xFE0E, 0xFE0F) and (_symbol(prev) or prev.isdigit() or prev in "#*"):
            return None
        return "variation selector"
    if cp == 0x200D and 0 < i < len(text) - 1 and _symbol(text[i - 1]) and _symbol(text[i + 1]):
        return None
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return "control character"
    if cat in ("Zl", "Zp"):
        return "line/paragraph separator"
    return "invisible character"


def _flag_sequences(text: str) -> set[int]:
    """Positions of tag characters inside emoji subdivision flags (U+1F3F4, tags, U+E007F)."""
    ok: set[int] = set()
    for m in regex.finditer(r"\U0001F3F4([\U000E0020-\U000E007E]{1,30})\U000E007F", text):
        ok.update(range(m.start(1), m.end()))
    return ok


def _decode_run(kind: str, cps: list[int]) -> str:
    if kind == "unicode tag characters":
        return "".join(chr(c - 0xE0000) for c in cps if 0x20 <= c - 0xE0000 < 0x7F)
    if kind == "variation selector":
        data = bytes((c - 0xFE00) if c <= 0xFE0F else (c - 0xE0100 + 16) for c in cps)
        return data.decode("utf-8", "replace")
    return ""


def _smuggles(kind: str, cps: list[int]) -> bool:
    if kind == "unicode tag characters":
        return True                       # no honest use outside a subdivision flag
    if kind == "variation selector":
        return len(cps) >= 2              # a lone stray selector is a typo; a run is bytes
    return kind == "invisible character" and sum(c in _ZERO_WIDTH for c in cps) >= ZERO_WIDTH_RUN


def _invisible(text: str, out: list[Finding], decoded: list[tuple[str, str]]) -> list[int]:
    """Findings for runs of hidden characters; returns the indexes of every hidden character."""
    hidden: list[int] = []
    runs: list[tuple[str, int, int, list[int]]] = []
    flags = _flag_sequences(text) if "\U0001F3F4" in text else set()
    for m in _SUSPECT.finditer(text):
        i = m.start()
        k = None if i in flags else _kind(text, i)
        if k is None:
            continue
        hidden.append(i)
        if runs and runs[-1][0] == k and runs[-1][2] == i - 1:
            kind, start, _, cps = runs[-1]
            if len(cps) < 4096:
                cps.append(ord(text[i]))
            runs[-1] = (kind, start, i, cps)
        else:
            runs.append((k, i, i, [ord(text[i])]))
    for n, (kind, start, end, cps) in enumerate(runs):
        if kind in ("unicode tag characters", "variation selector") and end > start:
            decoded.append((kind, _decode_run(kind, cps)))
        if n >= MAX_RUN_FLAGS:
            continue
        if start == end:
            label = kind[:-1] if kind.endswith("characters") else kind
            flag = f"{label} U+{cps[0]:04X} at {start}"
        else:
            distinct = sorted(set(cps))
            shown = ", ".join(f"U+{c:04X}" for c in distinct[:4]) + (", ..." if len(distinct) > 4 else "")
            plural = kind if kind.endswith("s") else kind + "s"
            flag = f"{end - start + 1} {plural} {shown} at {start}-{end}"
        out.append(Finding(start, "invisible", kind, flag, _smuggles(kind, cps)))
    if len(runs) > MAX_RUN_FLAGS:
        out.append(Finding(runs[MAX_RUN_FLAGS][1], "invisible", "hidden characters",
                           f"... and {len(runs) - MAX_RUN_FLAGS} more runs of hidden characters"))
    return hidden


def _folded(text: str, hidden: list[int]) -> tuple[str, list[int] | None]:
    """Text without its hidden characters, NFKC-folded and lower-cased, with a map back to positions
    (None: positions are unchanged)."""
    if not hidden and text.isascii():
        return text.lower(), None
    skip = set(hidden)
    out: list[str] = []
    pos: list[int] = []
    for i, ch in enumerate(text):
        if i in skip:
            continue
        f = ch.lower() if ch < "\x80" else unicodedata.normalize("NFKC", ch).casefold()
        out.append(f)
        pos.extend([i] * len(f))
    return "".join(out), pos


def _phrases(folded: str, pos: list[int] | None, hidden_in: str = "") -> list[Finding]:
    """One finding per phrase label found: first position (mapped back through `pos`) and how many."""
    out: list[Finding] = []
    for cls, label, rx in PHRASES:
        hits = [m.start() for m in rx.finditer(folded)]
        if not hits:
            continue
        first = hits[0] if pos is None else pos[min(hits[0], len(pos) - 1)]
        more = f" (x{len(hits)})" if len(hits) > 1 else ""
        # "ignore previous instructions" has no honest use; a text that quotes it (a detector's
        # description) mentions it, one that says it uses it
        alone = label in ALONE and any(not _MENTION.search(folded, max(0, h - 24), h) for h in hits)
        if hidden_in:
            out.append(Finding(-1, cls, label, f"instruction-like phrase in hidden {hidden_in}: '{label}'{more}",
                               smuggling=True))
        else:
            out.append(Finding(first, cls, label, f"instruction-like phrase: '{label}' at {first}{more}", alone=alone))
    return out


def scan(text: str) -> tuple[Finding, ...]:
    """Findings in `text`, in a fixed order: a truncation note, invisible characters, markup (by
    position), phrases (by position), phrases in decoded hidden text. Deterministic, never raises,
    never echoes the server's text."""
    if not isinstance(text, str) or not text:
        return ()
    out: list[Finding] = []
    if len(text) > MAX_SCAN:
        out.append(Finding(MAX_SCAN, "truncated", "text truncated",
                           f"text truncated: scanned the first {MAX_SCAN} of {len(text)} characters"))
        text = text[:MAX_SCAN]
    decoded: list[tuple[str, str]] = []
    hidden = _invisible(text, out, decoded)
    marks: list[Finding] = []
    for label, rx in _MARKUP:
        for n, m in enumerate(rx.finditer(text)):
            if n >= MAX_RUN_FLAGS:
                break
            tag = f"<{m.group(1).upper()}>" if label == "hidden markup" else ""
            marks.append(Finding(m.start(), "markup", f"{tag} block" if tag else label,
                                 f"{label} {tag} at {m.start()}" if tag else f"{label} at {m.start()}"))
    ws = _WS_RUN.search(text)
    if ws:
        marks.append(Finding(ws.start(), "markup", "long whitespace run",
                             f"long whitespace run ({ws.end() - ws.start()} characters) at {ws.start()}"))
    out.extend(sorted(marks, key=lambda f: f.at))
    folded, pos = _folded(text, hidden)
    out.extend(sorted(_phrases(folded, pos), key=lambda f: f.at))
    for kind, plain in decoded:
        plural = kind if kind.endswith("s") else kind + "s"
        out.extend(_phrases(unicodedata.normalize("NFKC", plain).casefold(), None, plural))
    seen: set[str] = set()
    kept: list[Finding] = []
    for f in out:
        if f.flag not in seen:
            seen.add(f.flag)
            kept.append(f)
    return tuple(kept)


def _at(where: str, f: Finding) -> str:
    what = f.label if f.cls in CARRIERS or f.cls == "truncated" else f"'{f.label}'"
    at = "in decoded hidden text" if f.at < 0 else f"at char {f.at}"
    return f"{what} {at}" + (f" of {where}" if where else "")


def hold_reason(findings: Iterable[tuple[str, Finding]]) -> str | None:
    """Why the (where, finding) pairs of one capability are high-confidence enough to hold it at
    first sight, or None (flag only). Holds: a smuggling carrier (tag characters, selector bytes, a
    long zero-width run, phrases in decoded hidden text); a carrier (invisible characters, hiding
    markup, chat-template tokens) with an instruction-like phrase in the same text, or with a
    strong one anywhere in the entry; an unquoted
    "ignore previous instructions"; or two different phrases of which one is strong. Says what was
    found and where ("<IMPORTANT> block at char 23 of description, with 'sensitive file reference'
    at char 69 of description"), never the server's text."""
    items = [(w, f) for w, f in findings if f.cls != "truncated"]
    smuggled = next((x for x in items if x[1].smuggling), None)
    if smuggled is not None:
        return "hidden text: " + _at(*smuggled)
    carriers = [x for x in items if x[1].cls in CARRIERS]
    phrases = [x for x in items if x[1].cls not in CARRIERS]
    # a carrier corroborates a phrase in its own text, or a strong one anywhere in the entry (a
    # stray soft hyphen in one parameter says nothing about "otherwise it fails" in another)
    pair = next(((c, p) for c in carriers for p in phrases if c[0] == p[0] or p[1].cls in STRONG), None)
    if pair is not None:
        return f"{_at(*pair[0])}, with {_at(*pair[1])}"
    alone = next((x for x in phrases if x[1].alone), None)
    if alone is not None:
        return _at(*alone)
    strong = next((x for x in phrases if x[1].cls in STRONG), None)
    if strong is not None:
        other = next((x for x in phrases if x[1].label != strong[1].label), None)
        if other is not None:
            first, second = sorted((strong, other), key=lambda x: (x[0] != "description", x[1].at))
            return f"{_at(*first)}, with {_at(*second)}"
    return None


def hidden_instructions(text: str) -> list[str]:
    """Short human-readable flags for hidden characters, hidden markup and instruction-like phrases in
    `text`, e.g. "invisible character U+200B at 14" or "instruction-like phrase: 'ignore previous
    instructions' at 0". Empty when nothing looks hidden. Deterministic, never raises; examines at
    most MAX_SCAN characters and says so when the text was longer."""
    return [f.flag for f in scan(text)]
