"""Flags for published text that could carry a tool-poisoning or rug-pull payload.

`hidden_instructions(text)` looks at what an MCP server publishes for the model to read (tool and
prompt descriptions, argument descriptions, server instructions) and returns short human-readable
flags, in a fixed order: a truncation note if the text was cut, then invisible characters, hidden
markup and instruction-like phrases, each by position. It never echoes the server's text: a flag
names a code point, a position, or one of the fixed labels below.

* Invisible or format characters: every Unicode `Cf` character (zero-width space/joiners, bidi
  embeddings/overrides/isolates U+202A-202E, U+2066-2069, word joiner, BOM, soft hyphen, tag
  characters U+E0000-E007F), control characters other than tab/CR/LF (an ANSI ``ESC[8m`` hides text
  in a terminal), line/paragraph separators, variation selectors used outside an emoji, and blank
  fillers (Hangul fillers, braille blank). A zero-width joiner between two symbols and a variation
  selector after a symbol are emoji, not payloads. Runs of tag characters and of variation selectors
  are decoded (tag characters map to ASCII; variation selectors to bytes, as in "emoji smuggling")
  and the decoded text is checked for instruction-like phrases too.
* Hidden markup: HTML comments, ``<IMPORTANT>``/``<system>``-style tags, chat-template tokens
  (``<|im_start|>``, ``[INST]``, ``<<SYS>>``), CSS that hides text, markdown comments, and a long
  whitespace run that pushes text out of view.
* Instruction-like phrases aimed at the model, matched after removing invisible characters and
  NFKC-folding (so full-width letters and zero-width splits do not evade them).

Everything here is hand-written (Python's `unicodedata` supplies the character categories): the
payload shapes are specific to prompt injection and no maintained, dependency-light library covers
them. Homoglyphs (Cyrillic look-alikes) are out of scope. Bounded: at most `MAX_SCAN` characters are
examined, and the flags say so when the text was longer.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["hidden_instructions", "MAX_SCAN"]

MAX_SCAN = 200_000          # characters of one text examined
MAX_RUN_FLAGS = 16          # invisible-character runs reported one by one, then summarised
WHITESPACE_RUN = 120        # this many consecutive whitespace characters hide what follows

_W = r"[\W_]+"              # between words: spaces, punctuation, markdown emphasis


def _p(*words: str) -> str:
    return _W.join(words)


_ANY = r"(?:\w+" + _W + r"){0,3}?"       # up to three filler words
_PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((label, re.compile(rx)) for label, rx in (
    ("ignore previous instructions",
     r"\b(?:ignore|disregard|forget|override|bypass)" + _W + r"(?:(?:all|any|the|of|everything|your|previous|prior"
     r"|above|earlier|preceding|former|existing|system|safety|other|original)" + _W + r"){1,4}"
     r"(?:instructions?|directions?|prompts?|rules|guidelines|guardrails|polic(?:y|ies)|constraints|context)\b"),
    ("do not tell the user",
     r"\b(?:do" + _W + r"not|don't|dont|never|must" + _W + r"not)" + _W + _ANY +
     r"(?:tell|inform|notify|alert|show|let|warn)" + _W + _ANY + r"users?\b"),
    ("do not mention or reveal",
     r"\b(?:do" + _W + r"not|don't|dont|never)" + _W + r"(?:mention|reveal|disclose|acknowledge)\b"),
    ("without telling the user",
     r"\bwithout" + _W + _ANY + r"(?:telling|informing|notifying|alerting|showing|asking)" + _W + _ANY + r"users?\b"),
    ("hide this from the user",
     r"\b(?:hide|conceal|keep)" + _W + _ANY + r"(?:secret" + _W + r"|hidden" + _W + r")?from" + _W +
     r"(?:the" + _W + r")?users?\b|\busers?" + _W + r"(?:must|should)" + _W + r"(?:not|never)" + _W +
     r"(?:know|see|find" + _W + r"out|be" + _W + r"(?:told|informed|aware))\b"),
    ("skip user confirmation",
     r"\b(?:without|do" + _W + r"not|don't|dont|never)" + _W + _ANY + r"(?:ask(?:ing)?|wait(?:ing)?|request(?:ing)?"
     r"|seek(?:ing)?|get(?:ting)?)" + _W + _ANY + r"(?:confirmation|permission|approval|consent)\b"),
    ("before using this tool, read/send ...",
     r"\bbefore" + _W + r"(?:using|calling|invoking|running|executing|you" + _W + r"(?:use|call|invoke))" + _W +
     r"(?:this|the|any|other)" + _W + r"(?:\w+" + _W + r")?tools?\b.{0,120}?\b(?:read|send|cat|open|include|pass"
     r"|upload|fetch|access|provide|attach|copy)\b"),
    ("send the contents",
     r"\b(?:send|forward|upload|transmit|exfiltrate|leak|pass|include|post|attach|email)" + _W +
     r"(?:(?:the|its|their|all|full|entire|complete|whole|file|this|that)" + _W + r"){0,3}contents?\b"),
    ("exfiltrate", r"\bexfiltrat\w*"),
    ("system prompt", r"\bsystem" + _W + r"(?:prompt|message|instructions?)\b"),
    ("new instructions",
     r"\b(?:new|updated|real|actual|hidden|secret|true|revised)" + _W + r"instructions?\b"),
    ("you are now", r"\byou" + _W + r"are" + _W + r"now\b|\bfrom" + _W + r"now" + _W + r"on\b"),
    ("otherwise it will not work",
     r"\botherwise" + _W + r"(?:\w+" + _W + r"){0,5}?(?:will" + _W + r"not|won't|cannot|can't|will" + _W +
     r"fail)" + _W + r"(?:work|function|succeed)?"),
    ("instruction about other tools",
     r"\b(?:when|whenever|if)" + _W + r"(?:\w+" + _W + r"){0,4}?tools?" + _W + r"(?:is|are)" + _W +
     r"(?:available|present|called|used|invoked)\b"),
    ("redirect all messages",
     r"\b(?:all|every|any)" + _W + r"(?:\w+" + _W + r"){0,2}?(?:emails?|messages?|requests?|payments?|transfers?)" +
     _W + r"(?:must|should|shall|will)" + _W + r"(?:\w+" + _W + r"){0,2}?(?:sent|redirected|forwarded|routed|copied"
     r"|cc'?d|bcc'?d)\b"),
    ("sensitive file reference",
     r"~/\.ssh\b|\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws/credentials|(?:^|[\s/'\"`(~])\.env\b(?![.\w])"
     r"|/etc/(?:passwd|shadow)\b|\bmcp\.json\b|~/\.cursor\b|claude_desktop_config|\.netrc\b|\.git-credentials"
     r"|\.kube/config|\.npmrc\b|\.pypirc\b|\.docker/config\.json"),
))

_MARKUP: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("html comment", re.compile(r"<!--")),
    ("hidden markup", re.compile(
        r"<\s*(important|system|system[-_ ]?prompt|instructions?|hidden|secret|admin|assistant|critical|override"
        r"|sudo|tool[-_ ]?instructions?)(?=[\s>/])[^<>]{0,200}>", re.I)),
    ("chat-template token", re.compile(
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|<</?SYS>>",
        re.I)),
    ("hidden style", re.compile(
        r"style\s*=\s*[\"'][^\"'<>]{0,200}?(?:display\s*:\s*none|visibility\s*:\s*hidden"
        r"|font-size\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?:\.0+)?(?![.\d]))", re.I)),
    ("markdown comment", re.compile(r"(?m)^\s*\[(?://|comment)\]\s*:\s*#")),
)
_SUSPECT = re.compile(r"[^\t\n\r\x20-\x7e]")
_WS_RUN = re.compile(r"\s{%d,}" % WHITESPACE_RUN)

_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}
_BLANKS = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F})


def _is_vs(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _symbol(ch: str) -> bool:
    return bool(ch) and (unicodedata.category(ch) in ("So", "Sk", "Sm") or 0x1F000 <= ord(ch) <= 0x1FAFF)


def _kind(text: str, i: int) -> str | None:
    """What hides at text[i], or None for an ordinary (or emoji-legitimate) character."""
    ch = text[i]
    cp = ord(ch)
    if cp < 0x80:
        return "control character" if (cp < 0x20 and ch not in "\t\n\r") or cp == 0x7F else None
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
    if cp in _BLANKS:
        return "invisible character"
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return "invisible character"
    if cat == "Cc":
        return "control character"
    if cat in ("Zl", "Zp"):
        return "line/paragraph separator"
    return None


def _decode_run(kind: str, cps: list[int]) -> str:
    if kind == "unicode tag characters":
        return "".join(chr(c - 0xE0000) for c in cps if 0x20 <= c - 0xE0000 < 0x7F)
    if kind == "variation selector":
        data = bytes((c - 0xFE00) if c <= 0xFE0F else (c - 0xE0100 + 16) for c in cps)
        return data.decode("utf-8", "replace")
    return ""


def _invisible(text: str, flags: list[str], decoded: list[tuple[str, str]]) -> list[int]:
    """Flags runs of hidden characters; returns the indexes of every hidden character."""
    hidden: list[int] = []
    runs: list[tuple[str, int, int, list[int]]] = []
    for m in _SUSPECT.finditer(text):     # only non-printable-ASCII characters can hide anything
        i = m.start()
        k = _kind(text, i)
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
    hidden_text: dict[str, list[str]] = {}
    for n, (kind, start, end, cps) in enumerate(runs):
        if kind in ("unicode tag characters", "variation selector") and end > start:
            hidden_text.setdefault(kind, []).append(_decode_run(kind, cps))
        if n >= MAX_RUN_FLAGS:
            continue
        if start == end:
            label = kind[:-1] if kind.endswith("characters") else kind
            flags.append(f"{label} U+{cps[0]:04X} at {start}")
        else:
            distinct = sorted(set(cps))
            shown = ", ".join(f"U+{c:04X}" for c in distinct[:4]) + (", ..." if len(distinct) > 4 else "")
            plural = kind if kind.endswith("s") else kind + "s"
            flags.append(f"{end - start + 1} {plural} {shown} at {start}-{end}")
    if len(runs) > MAX_RUN_FLAGS:
        flags.append(f"... and {len(runs) - MAX_RUN_FLAGS} more runs of hidden characters")
    decoded.extend((kind, "\n".join(parts)) for kind, parts in hidden_text.items())
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


def _phrases(folded: str, pos: list[int] | None, suffix: str = "", *, at: bool = True) -> list[str]:
    """One flag per phrase label found: first position (mapped back through `pos`) and how many."""
    flags: list[tuple[int, str]] = []
    for label, rx in _PHRASES:
        hits = [m.start() for m in rx.finditer(folded)]
        if not hits:
            continue
        first = hits[0] if pos is None else pos[min(hits[0], len(pos) - 1)]
        where = f" at {first}" if at else ""
        more = f" (x{len(hits)})" if len(hits) > 1 else ""
        flags.append((first, f"instruction-like phrase{suffix}: '{label}'{where}{more}"))
    return [f for _, f in sorted(flags)]


def hidden_instructions(text: str) -> list[str]:
    """Short human-readable flags for hidden characters, hidden markup and instruction-like phrases in
    `text`, e.g. "invisible character U+200B at 14" or "instruction-like phrase: 'ignore previous
    instructions' at 0". Empty when nothing looks hidden. Deterministic, never raises; examines at
    most MAX_SCAN characters and says so when the text was longer."""
    if not isinstance(text, str) or not text:
        return []
    flags: list[str] = []
    if len(text) > MAX_SCAN:
        flags.append(f"text truncated: scanned the first {MAX_SCAN} of {len(text)} characters")
        text = text[:MAX_SCAN]
    decoded: list[tuple[str, str]] = []
    hidden = _invisible(text, flags, decoded)
    marks: list[tuple[int, str]] = []
    for label, rx in _MARKUP:
        for n, m in enumerate(rx.finditer(text)):
            if n >= MAX_RUN_FLAGS:
                break
            what = f" <{m.group(1).upper()}>" if label == "hidden markup" else ""
            marks.append((m.start(), f"{label}{what} at {m.start()}"))
    ws = _WS_RUN.search(text)
    if ws:
        marks.append((ws.start(), f"long whitespace run ({ws.end() - ws.start()} characters) at {ws.start()}"))
    flags.extend(f for _, f in sorted(marks))
    folded, pos = _folded(text, hidden)
    flags.extend(_phrases(folded, pos))
    for kind, plain in decoded:
        plural = kind if kind.endswith("s") else kind + "s"
        flags.extend(_phrases(unicodedata.normalize("NFKC", plain).casefold(), None, f" in hidden {plural}", at=False))
    return list(dict.fromkeys(flags))
