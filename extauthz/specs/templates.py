"""Which concrete URIs a published RFC 6570 URI template stands for, matched the way the servers
that publish templates match them.

The official SDK's `UriTemplate` (Levels 1-3, plus `{/x*}`, `{.x*}`, `{;x*}` explode) is the
matcher: it is what MCP SDK servers route `resources/read` with, in linear time. It rejects
FastMCP's `{path*}` (FastMCP's "one or more segments" wildcard, regex `.+` in fastmcp 2.14
`resources/template.py:build_regex`) and `{?q*}`: a template in FastMCP's grammar (`{x}`, `{x*}`,
`{?a,b}`) is rewritten into the SDK's (`{x*}` -> a non-empty `{+x}`) and matched by it. Anything
neither reads matches nothing, so reads through it stay `unknown_capability` (fail closed).

What a match may capture is narrower than either framework allows: no captured value may contain a
`.` or `..` segment (a fragment `{#x}` or query `{?q}` lies outside what `uri_problem` checks), and
a FastMCP `{x*}` never spans `?` or `#`. Encoded traversal (`%2e`, `%2f`, `%25`) never gets
here: `extauthz.mcp.names.uri_problem` refuses it first. Compiled once per published template.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from extauthz.mcp.names import MAX_URI

log = logging.getLogger("extauthz.specs.templates")

__all__ = ["UriMatcher", "compile_template"]

# FastMCP 2.14's grammar: `{name}` (one segment), `{name*}` (one or more characters, any segments),
# and `{?a,b}` query parameters (optional).
_EXPR = re.compile(r"\{([^{}]*)\}")
_FASTMCP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _dot_segment(value: str) -> bool:
    return value in (".", "..") or any(seg in (".", "..") for seg in value.split("/"))


@dataclass(frozen=True, slots=True)
class UriMatcher:
    """A compiled template: `matches(uri)`. `how` says which semantics apply (for the inventory)."""

    template: str
    how: str                                    # "sdk" | "fastmcp" | "none"
    literal_prefix: str                         # every match starts with this: a cheap pre-filter
    _sdk: UriTemplate | None = field(default=None, repr=False, compare=False)
    _nonempty: frozenset[str] = frozenset()     # fallback: FastMCP's `{x*}` is one or more characters

    def matches(self, uri: str) -> bool:
        if self._sdk is None or not uri.startswith(self.literal_prefix):
            return False
        values = self._sdk.match(uri, max_uri_length=MAX_URI)
        if values is None:
            return False
        for name, v in values.items():
            if type(v) is str:
                if _dot_segment(v) or (not v and name in self._nonempty):
                    return False
            elif any(_dot_segment(item) for item in v):
                return False
        return True


def compile_template(template: str) -> UriMatcher:
    """Compile once, at learn time. Never raises: an unusable template matches nothing."""
    brace = template.find("{")
    prefix = template if brace < 0 else template[:brace]
    try:
        return UriMatcher(template, "sdk", prefix, UriTemplate.parse(template, max_length=MAX_URI))
    except InvalidUriTemplate as e:
        problem = str(e)
    rewritten = _from_fastmcp(template)
    if rewritten is not None:
        try:
            return UriMatcher(template, "fastmcp", prefix, UriTemplate.parse(rewritten[0], max_length=MAX_URI),
                              rewritten[1])
        except InvalidUriTemplate as e:
            problem = str(e)
    log.info("URI template %r cannot be matched (%s): reads through it are unknown_capability",
             template[:200], problem)
    return UriMatcher(template, "none", prefix)


def _from_fastmcp(template: str) -> tuple[str, frozenset[str]] | None:
    """FastMCP's grammar in the SDK's: `{x*}` (fastmcp's regex `.+`) becomes `{+x}` that must not be
    empty, `{?a*}` becomes `{?a}`; `{x}` and `{?a,b}` stay. The SDK then parses and matches it in
    linear time (one multi-segment variable, a literal between variables), so a hand-built regex
    with its backtracking is never needed. None for any other operator or modifier."""
    nonempty: set[str] = set()
    out: list[str] = []
    pos = 0
    for m in _EXPR.finditer(template):
        out.append(template[pos:m.start()])
        pos = m.end()
        body = m.group(1)
        if body.startswith("?"):
            names = [n[:-1] if n.endswith("*") else n for n in body[1:].split(",")]
            if not all(_FASTMCP_NAME.fullmatch(n) for n in names):
                return None
            out.append("{?" + ",".join(names) + "}")
        elif body.endswith("*") and _FASTMCP_NAME.fullmatch(body[:-1]):
            nonempty.add(body[:-1])
            out.append("{+" + body[:-1] + "}")
        elif _FASTMCP_NAME.fullmatch(body):
            out.append(m.group(0))
        else:
            return None
    out.append(template[pos:])
    return "".join(out), frozenset(nonempty)
