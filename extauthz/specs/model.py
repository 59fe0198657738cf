"""A server's published spec: what `tools/list`, `resources/list`, `resources/templates/list` and
`prompts/list` said, in the shape the decision core reads (dict lookups, precomputed hashes), and
what its `initialize` or `server/discover` result said of it (`published_info`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from extauthz.specs.templates import UriMatcher, compile_template


def canonical_hash(value: Any) -> str:
    """Content hash of a JSON value, independent of key order (validators are cached by it)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    input_schema: dict[str, Any]
    schema_hash: str
    description: str
    digest: str                 # hash of the whole published entry: drift detection
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    uri: str
    name: str
    digest: str
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    uri_template: str
    name: str
    matcher: UriMatcher         # compiled once, here: extauthz.specs.templates
    digest: str
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PromptSpec:
    name: str
    arguments: dict[str, bool]  # argument name -> required
    digest: str
    raw: dict[str, Any] = field(repr=False, compare=False)


def tool_from(entry: dict[str, Any]) -> ToolSpec | None:
    name, schema = entry.get("name"), entry.get("inputSchema")
    if not isinstance(name, str) or not isinstance(schema, dict):
        return None
    desc = entry.get("description")
    return ToolSpec(name, schema, canonical_hash(schema), desc if isinstance(desc, str) else "",
                    canonical_hash(entry), entry)


def resource_from(entry: dict[str, Any]) -> ResourceSpec | None:
    uri = entry.get("uri")
    if not isinstance(uri, str):
        return None
    name = entry.get("name")
    return ResourceSpec(uri, name if isinstance(name, str) else "", canonical_hash(entry), entry)


def template_from(entry: dict[str, Any]) -> TemplateSpec | None:
    tpl = entry.get("uriTemplate")
    if not isinstance(tpl, str):
        return None
    name = entry.get("name")
    return TemplateSpec(tpl, name if isinstance(name, str) else "", compile_template(tpl), canonical_hash(entry), entry)


def prompt_from(entry: dict[str, Any]) -> PromptSpec | None:
    name = entry.get("name")
    if not isinstance(name, str):
        return None
    args: dict[str, bool] = {}
    for a in entry.get("arguments") or ():
        if isinstance(a, dict) and isinstance(a.get("name"), str):
            args[a["name"]] = a.get("required") is True
    return PromptSpec(name, args, canonical_hash(entry), entry)


PARSERS = {"tools": tool_from, "resources": resource_from, "resourceTemplates": template_from, "prompts": prompt_from}


@dataclass(slots=True)
class ServerSpec:
    """Everything one server has published. Replaced kind by kind when a new list snapshot completes."""

    server: str
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    resources: dict[str, ResourceSpec] = field(default_factory=dict)
    templates: dict[str, TemplateSpec] = field(default_factory=dict)
    prompts: dict[str, PromptSpec] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)       # serverInfo, protocolVersion, capabilities
    quarantined: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> why
    pinned: bool = False
    sources: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, key) -> traffic|discovery|pinned
    seen_by: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (kind, key) -> viewers shown it
    approved: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, key) -> digest an operator approved

    def table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {"tools": self.tools, "resources": self.resources,
                                             "resourceTemplates": self.templates, "prompts": self.prompts}
        return tables[kind]

    def template_for(self, uri: str) -> TemplateSpec | None:
        for t in self.templates.values():
            if t.matcher.matches(uri):
                return t
        return None


SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"


def published_info(method: str, result: dict[str, Any]) -> dict[str, Any]:
    """`ServerSpec.info` from an `initialize` result (protocolVersion, serverInfo, capabilities,
    instructions) or a `server/discover` one (supportedVersions, capabilities, instructions,
    serverInfo from `_meta`): only the fields of the type the protocol gives them."""
    info: dict[str, Any] = {}
    if method == "initialize":
        _take(info, result, "protocolVersion", str)
        _take(info, result, "serverInfo", dict)
        _take(info, result, "capabilities", dict)
        _take(info, result, "instructions", str)
    elif method == "server/discover":
        versions = result.get("supportedVersions")
        if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
            info["supportedVersions"] = versions
        _take(info, result, "capabilities", dict)
        _take(info, result, "instructions", str)
        meta = result.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get(SERVER_INFO_META_KEY), dict):
            info["serverInfo"] = meta[SERVER_INFO_META_KEY]
    return info


def _take(out: dict[str, Any], src: dict[str, Any], key: str, typ: type) -> None:
    v = src.get(key)
    if isinstance(v, typ):
        out[key] = v
