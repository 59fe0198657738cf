"""Checks JSON Schema cannot express: uniqueness, globs, name hygiene, pointers, files.

Runs on documents that may have failed the schema too (so one run reports everything), hence
every access is defensive: anything of the wrong type was already reported by the schema.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .authority import parse_authority
from .globs import glob_problem
from .yamldoc import Path

Finding = tuple[Path, str]          # (data path, message)

_POINTER_BAD_TILDE = re.compile(r"~(?![01])")
_RULE_KEYS = (("tools", "name", "tool"), ("resources", "uri", "resource"), ("prompts", "name", "prompt"))


def _dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield i, item


def text_problem(value: str) -> str | None:
    """Why a name cannot be compared exactly: not UTF-8, control characters, or not NFC."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 (contains a lone surrogate)"
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            return f"contains control character U+{ord(ch):04X}"
    if unicodedata.normalize("NFC", value) != value:
        return "not in Unicode NFC form (names are compared exactly: normalise it)"
    return None


def pointer_problem(pointer: str) -> str | None:
    """RFC 6901 syntax: empty or '/'-led, and '~' only as '~0' or '~1'."""
    if pointer and not pointer.startswith("/"):
        return "must be a JSON Pointer: empty or starting with '/'"
    if _POINTER_BAD_TILDE.search(pointer):
        return "'~' in a JSON Pointer must be written '~0' ('~1' for '/')"
    why = text_problem(pointer)
    return f"invalid JSON Pointer: {why}" if why else None


def check_document(doc: Any, base_dir: str) -> list[Finding]:
    """Every semantic finding in `doc`; `base_dir` resolves relative `specFile` paths."""
    if not isinstance(doc, dict):
        return []
    found: list[Finding] = []
    found += _check_numbers(doc)
    found += _check_identity(doc.get("identity"))
    seen_names: dict[str, int] = {}
    seen_routes: dict[tuple[str, int | None, str], str] = {}
    for i, server in _dicts(doc.get("servers")):
        path: Path = ("servers", i)
        name = server.get("name")
        if isinstance(name, str):
            if name in seen_names:
                found.append((path + ("name",),
                              f"duplicate server name {name!r} (first at servers[{seen_names[name]}])"))
            else:
                seen_names[name] = i
        found += _check_match(server.get("match"), path + ("match",), str(name), seen_routes)
        found += _check_server_fields(server, path, base_dir)
        for key, field, kind in _RULE_KEYS:
            found += _check_rules(server.get(key), path + (key,), field, kind)
    return found


def _check_numbers(doc: dict[str, Any]) -> list[Finding]:
    risk = doc.get("risk")
    if not isinstance(risk, dict):
        return []
    return [(("risk", key), "must be a finite number")
            for key in ("blockAt", "decayPerMinute")
            if isinstance(risk.get(key), float) and not math.isfinite(risk[key])]


def _check_identity(identity: Any) -> list[Finding]:
    if not isinstance(identity, dict):
        return []
    found: list[Finding] = []
    for key in ("subject", "groupsClaim"):
        if isinstance(identity.get(key), str) and (why := text_problem(identity[key])):
            found.append((("identity", key), f"invalid claim name: {why}"))
    claims = identity.get("clientIdClaims")
    for i, claim in enumerate(claims if isinstance(claims, list) else []):
        if isinstance(claim, str) and (why := text_problem(claim)):
            found.append((("identity", "clientIdClaims", i), f"invalid claim name: {why}"))
    return found


def _check_match(match: Any, path: Path, server: str,
                 seen: dict[tuple[str, int | None, str], str]) -> list[Finding]:
    if not isinstance(match, dict):
        return []
    found: list[Finding] = []
    prefix = match.get("pathPrefix", "/")
    if isinstance(prefix, str):
        if any(c in prefix for c in "?#") or any(c.isspace() for c in prefix):
            found.append((path + ("pathPrefix",), "must be a plain path (no '?', '#' or spaces)"))
        elif any(seg in (".", "..") for seg in prefix.split("/")):
            found.append((path + ("pathPrefix",), "must not contain '.' or '..' segments"))
        elif why := text_problem(prefix):
            found.append((path + ("pathPrefix",), f"invalid pathPrefix: {why}"))
        prefix = prefix.rstrip("/") or "/"
    authorities = match.get("authority")
    entries = [(path + ("authority",), authorities)] if isinstance(authorities, str) else \
        [(path + ("authority", i), a) for i, a in enumerate(authorities)] if isinstance(authorities, list) else []
    for apath, authority in entries:
        if not isinstance(authority, str) or not authority:
            continue  # the schema reports wrong types and empty strings
        try:
            host, port = parse_authority(authority)
        except ValueError as exc:
            found.append((apath, f"invalid authority {authority!r}: {exc}"))
            continue
        if isinstance(prefix, str):
            route = (host, port, prefix)
            if route in seen and seen[route] != server:
                found.append((apath,
                              f"server {seen[route]!r} already matches {authority!r} with pathPrefix {prefix!r}"))
            seen.setdefault(route, server)
    return found


def _check_server_fields(server: dict[str, Any], path: Path, base_dir: str) -> list[Finding]:
    found: list[Finding] = []
    upstream = server.get("upstream")
    if isinstance(upstream, str) and re.match(r"(?i)https?://", upstream):  # else: schema reports
        try:
            parts = urlsplit(upstream)
            ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises on a bad port
        except ValueError:
            ok = False
        if not ok:
            found.append((path + ("upstream",), f"invalid upstream URL {upstream!r}"))
    spec = server.get("specFile")
    if isinstance(spec, str) and spec:
        full = os.path.normpath(os.path.join(base_dir, spec))
        if not os.path.isfile(full):
            found.append((path + ("specFile",), f"specFile {spec!r} not found (looked for {full})"))
    return found


def _check_rules(rules: Any, path: Path, field: str, kind: str) -> list[Finding]:
    found: list[Finding] = []
    first: dict[str, int] = {}
    for i, rule in _dicts(rules):
        rpath = path + (i,)
        pattern = rule.get(field)
        if isinstance(pattern, str) and pattern:
            why = text_problem(pattern) or glob_problem(pattern)
            if why:
                found.append((rpath + (field,), f"invalid {kind} {field} {pattern!r}: {why}"))
            elif pattern in first:
                found.append((rpath + (field,), f"duplicate {kind} rule {pattern!r} "
                              f"(first at {path[-1]}[{first[pattern]}]); it would never apply"))
            else:
                first[pattern] = i
        found += _check_allow(rule.get("allow"), rpath + ("allow",))
        for j, constraint in _dicts(rule.get("constraints")):
            cpath = rpath + ("constraints", j)
            argument = constraint.get("argument")
            if isinstance(argument, str) and (why := pointer_problem(argument)):
                found.append((cpath + ("argument",), why))
            for op in ("inClaim", "equalsClaim"):
                if isinstance(constraint.get(op), str) and (why := text_problem(constraint[op])):
                    found.append((cpath + (op,), f"invalid claim name: {why}"))
    return found


def _check_allow(allow: Any, path: Path) -> list[Finding]:
    if not isinstance(allow, dict):
        return []
    found: list[Finding] = []
    if allow.get("authenticated") is False and not set(allow) - {"authenticated"}:
        found.append((path + ("authenticated",),
                      "'authenticated: false' alone grants nothing explicit and never admits anonymous "
                      "callers; write 'authenticated: true' or name groups/subjects/clients"))
    for key in ("groups", "subjects", "clients"):
        values = allow.get(key)
        for i, value in enumerate(values if isinstance(values, list) else []):
            if isinstance(value, str) and (why := text_problem(value)):
                found.append((path + (key, i), f"invalid {key[:-1]} {value!r}: {why}"))
    return found
