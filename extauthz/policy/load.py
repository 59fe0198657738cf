"""Read a policy file into a complete, validated dict, or explain every problem in it.

Three layers, all reported with file:line:col: YAML (syntax, duplicate keys, bounds), the JSON
Schema (`schema.json`, every error at once), then semantic checks. Nothing from pyyaml or
jsonschema escapes as a raw exception: an operator editing a ConfigMap gets a list to fix.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .errors import PolicyError, PolicyIssue
from .semantics import check_document
from .yamldoc import Path, Positions, YamlDocError, load_yaml_with_positions

MAX_POLICY_BYTES = 1 << 20      # a policy is configuration, not data

_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}
_CUSTOM_MESSAGE_VALIDATORS = {"pattern", "oneOf", "anyOf", "minProperties", "maxProperties"}


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    """The packaged JSON Schema (draft 2020-12)."""
    text = resources.files("extauthz.policy").joinpath("schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(policy_schema())


def format_path(path: Path) -> str:
    """`servers[0].tools[1].allow.groups`; keys that are not identifiers are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "(top level)"


def _issue(source: str, line: int, col: int, path: Path, message: str) -> PolicyIssue:
    return PolicyIssue(f"{source}:{line}:{col} {format_path(path)}", message, line, col)


def _sorted(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    unique = {(i.line, i.column, i.location, i.message): i for i in issues}
    return [unique[k] for k in sorted(unique)]


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    for py, word in ((dict, "a mapping"), (list, "a list"), (str, "a string"), (int, "an integer"),
                     (float, "a number")):
        if isinstance(value, py):
            return word
    return f"a YAML {type(value).__name__}"


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return _describe(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_issues(error: ValidationError, source: str, positions: Positions) -> list[PolicyIssue]:
    """One jsonschema error -> issues a human can act on (unknown keys point at the key)."""
    path: Path = tuple(error.absolute_path)
    kind, instance = error.validator, error.instance
    value: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        issues = []
        for key in instance:
            if key not in allowed:
                line, col = positions.of_key(path + (key,))
                issues.append(_issue(source, line, col, path + (key,), f"unknown field {key!r}{hint}"))
        return issues
    line, col = positions.of_value(path)
    if kind in _CUSTOM_MESSAGE_VALIDATORS and "x-errorMessage" in schema:
        message = schema["x-errorMessage"]
    elif kind == "required" and isinstance(instance, dict):
        missing = [k for k in value if k not in instance]
        message = "missing required field " + ", ".join(repr(k) for k in missing)
    elif kind == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        message = f"expected {' or '.join(_TYPE_WORDS.get(w, w) for w in wanted)}, got {_describe(instance)}"
    elif kind == "enum":
        message = f"must be one of {', '.join(_short(v) for v in value)} (got {_short(instance)})"
    elif kind == "const":
        message = f"must be {_short(value)} (got {_short(instance)})"
    elif kind == "minLength" and value == 1:
        message = "must not be empty"
    elif kind == "minItems":
        message = f"must have at least {value} item{'s' if value != 1 else ''}"
    elif kind == "minimum":
        message = f"must be at least {value} (got {_short(instance)})"
    elif kind == "exclusiveMinimum":
        message = f"must be greater than {value} (got {_short(instance)})"
    elif kind == "uniqueItems":
        message = "must not contain duplicates"
    else:
        message = error.message
    return [_issue(source, line, col, path, message)]


def fill_defaults(doc: Any, schema: dict[str, Any] | None = None, root: dict[str, Any] | None = None) -> Any:
    """Fill every `default` the schema declares, in place, so consumers never guess."""
    root = root if root is not None else policy_schema()
    schema = schema if schema is not None else root
    while "$ref" in schema:
        ref = schema["$ref"]
        schema = root["$defs"][ref.rsplit("/", 1)[-1]]
    if isinstance(doc, dict):
        for key, sub in schema.get("properties", {}).items():
            target = sub
            while "$ref" in target:
                target = root["$defs"][target["$ref"].rsplit("/", 1)[-1]]
            default = sub.get("default", target.get("default"))
            if key not in doc and default is not None:
                doc[key] = copy.deepcopy(default)
            if key in doc:
                fill_defaults(doc[key], sub, root)
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for item in doc:
            fill_defaults(item, schema["items"], root)
    return doc


def resolve_policy_path(path: str) -> str:
    """A file as given; a directory (ConfigMap mount) -> its `policy.yaml`, else its only YAML file.

    Hidden entries (kubelet's `..data`, `..2026_...`) are ignored.
    """
    if not os.path.isdir(path):
        return path
    for name in ("policy.yaml", "policy.yml"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    candidates = sorted(n for n in os.listdir(path)
                        if not n.startswith(".") and n.endswith((".yaml", ".yml"))
                        and os.path.isfile(os.path.join(path, n)))
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise PolicyError([PolicyIssue(f"{path}:0:0 (directory)",
                                       f"expected policy.yaml or exactly one *.yaml file (found {found})")])
    return os.path.join(path, candidates[0])


def read_policy_bytes(path: str) -> bytes:
    """Read at most MAX_POLICY_BYTES (+1 to notice more); OS errors become a PolicyError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError([PolicyIssue(f"{path}:0:0 (file)", f"cannot read policy: {exc.strerror or exc}")]) from None
    return data


def parse_policy_bytes(data: bytes, source_name: str, base_dir: str | None = None) -> dict[str, Any]:
    """Decode strictly as UTF-8 (BOM allowed), then `parse_policy_text`."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyIssue(f"{source_name}:1:1 (file)",
                                       f"policy file larger than {MAX_POLICY_BYTES} bytes", 1, 1)])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise PolicyError([PolicyIssue(f"{source_name}:{line}:{col} (file)",
                                       f"not valid UTF-8 text (byte offset {exc.start})", line, col)]) from None
    return parse_policy_text(text, source_name, base_dir)


def parse_policy_text(text: str, source_name: str, base_dir: str | None = None) -> dict[str, Any]:
    """Validate policy YAML text; return the document with every default filled in.

    `base_dir` resolves relative `specFile` paths (default: the directory of `source_name`).
    Raises PolicyError listing every issue, sorted by position.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source_name))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError([_issue(source_name, 1, 1, (), f"policy file larger than {MAX_POLICY_BYTES} bytes")])
    try:
        doc, positions = load_yaml_with_positions(text)
    except YamlDocError as exc:
        raise PolicyError(_sorted([_issue(source_name, p.line, p.column, p.path, p.message)
                                   for p in exc.problems])) from None
    issues: list[PolicyIssue] = []
    try:
        for error in _validator().iter_errors(doc):
            issues += _schema_issues(error, source_name, positions)
    except (RecursionError, TypeError, ValueError) as exc:  # defensive: odd YAML types
        issues.append(_issue(source_name, 1, 1, (), f"cannot validate document: {exc}"))
    for path, message in check_document(doc, base_dir):
        line, col = positions.of_value(path)
        issues.append(_issue(source_name, line, col, path, message))
    if issues:
        raise PolicyError(_sorted(issues))
    filled: dict[str, Any] = fill_defaults(doc)
    return filled


def load_policy_document(path: str) -> dict[str, Any]:
    """Read and validate the policy at `path` (a file, or a ConfigMap directory)."""
    path = resolve_policy_path(path)
    return parse_policy_bytes(read_policy_bytes(path), path, os.path.dirname(os.path.abspath(path)))


def canonical_json(doc: Any) -> bytes:
    """Stable bytes for digests: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
