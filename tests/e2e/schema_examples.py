"""Valid tool arguments generated from a published inputSchema with ``hypothesis-jsonschema``:
deterministic (derandomized), a bounded number per schema, each checked by an independent judge
(Ajv, ECMA-262 patterns, formats asserted: tests/e2e/ajv_check.mjs) before a test sends it.

hypothesis-jsonschema speaks draft-07 with Python ``re`` patterns, so the schema it generates from
is adapted (the judge always sees the schema as published):

- objects that declare ``properties`` are closed: a legitimate client sends only declared
  arguments, and the product's strict mode (the default) refuses the others;
- ``prefixItems`` (2020-12) becomes draft-07 tuple ``items`` with ``additionalItems: false``;
- patterns get ECMA-262 meaning where Python's differs, in syntax both engines read alike:
  ``\\d``/``\\w``/``\\s`` become ASCII classes, a final ``$`` refuses a trailing newline
  (``(?!\\n)$``), and ``\\p{L}`` is a set of letters from several scripts (Python ``re`` has no
  ``\\p{..}``; every letter in it is ``\\p{L}``);
- ``format: uuid`` is generated (hypothesis-jsonschema leaves it unconstrained).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

__all__ = ["ajv_verdicts", "examples", "for_generation"]

HERE = Path(__file__).parent
# Latin-1 and Latin Extended-A letters, Greek, Cyrillic, CJK: all general category L.
LETTERS = ("A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u017f\u0391-\u03a1\u03a3-\u03a9"
           "\u03b1-\u03c9\u0410-\u044f\u4e00-\u9fa5")
CUSTOM_FORMATS = {"uuid": st.uuids().map(str)}


# ECMA-262 meaning, written so that Python `re` reads it the same way (the pattern must also pass
# any ECMA check a library in this process runs, so no `(?a)` or `\Z`).
_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r\\f\\v"}


def _pattern(p: str) -> str:
    if re.search(r"\\[pP]\{(?!L\})", p):
        raise ValueError(f"no generator translation for the property escape in {p!r}")
    out, in_class, i = [], False, 0
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            e = p[i + 1]
            if p.startswith("p{L}", i + 1):
                out.append(LETTERS if in_class else f"[{LETTERS}]")
                i += 5
                continue
            if e.lower() in _CLASS_ESCAPES:
                body = _CLASS_ESCAPES[e.lower()]
                if e.isupper() and in_class:
                    raise ValueError(f"no generator translation for \\{e} inside a class in {p!r}")
                out.append(body if in_class else f"[{'^' if e.isupper() else ''}{body}]")
            else:
                out.append(c + e)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    p = "".join(out)
    if p.endswith("$") and not p.endswith("\\$"):
        p = p[:-1] + r"(?!\n)$"   # Python's `$` also matches before a final newline; ECMA's does not
    return p


def for_generation(node: Any) -> Any:
    """The schema hypothesis-jsonschema generates from (see the module docstring)."""
    if isinstance(node, list):
        return [for_generation(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("const", "enum", "default", "examples") else for_generation(v)) for k, v in node.items()}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _pattern(out["pattern"])
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(out.get("prefixItems"), list):
        out["items"] = out.pop("prefixItems")
        out["additionalItems"] = False
    return out


def examples(schema: dict[str, Any], n: int) -> list[Any]:
    """Up to ``n`` distinct instances of ``schema``, the same ones on every run."""
    seen: dict[str, Any] = {}

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(from_schema(for_generation(schema), custom_formats=CUSTOM_FORMATS))
    def collect(value: Any) -> None:
        seen.setdefault(json.dumps(value, sort_keys=True), value)

    collect()
    return list(seen.values())[:n]


def ajv_verdicts(batches: list[tuple[dict[str, Any], list[Any]]]) -> list[list[dict[str, Any]]]:
    """Ajv's verdict on each instance of each (published schema, instances) pair."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("`node` is not on PATH (`make deps` installs Node.js)")
    payload = json.dumps([{"schema": s, "instances": xs} for s, xs in batches])
    proc = subprocess.run([node, str(HERE / "ajv_check.mjs")], input=payload, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ajv_check.mjs exited {proc.returncode}: {proc.stderr}")
    return json.loads(proc.stdout)
