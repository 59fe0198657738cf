"""What `extauthz discover` prints: the spec snapshot as JSON (loadable as a pinned `specFile`), or a
readable text report of the same."""

from __future__ import annotations

import datetime
from typing import Any

from extauthz.discovery.client import Snapshot
from extauthz.discovery.findings import entry_key
from extauthz.mcp.kinds import KIND_NAMES as KINDS

KIND_LABELS = {"tools": ("tool", "tools"), "resources": ("resource", "resources"),
               "resourceTemplates": ("resource template", "resource templates"), "prompts": ("prompt", "prompts")}
LINE_WIDTH = 110


def snapshot_json(snap: Snapshot, found: dict[str, Any]) -> dict[str, Any]:
    """The snapshot in the shape `serve` accepts as a pinned spec (`specFile`): the four lists at
    the top level, plus what a reader wants to know about where they came from."""
    doc: dict[str, Any] = {
        "server": snap.name,
        "serverInfo": snap.server_info,
        "protocolVersion": snap.protocol_version,
        "capabilities": snap.capabilities,
    }
    if snap.instructions:
        doc["instructions"] = snap.instructions
    if snap.supported_versions:
        doc["supportedVersions"] = snap.supported_versions
    for kind in KINDS:
        if kind in snap.lists:
            doc[kind] = snap.lists[kind]
    doc["findings"] = found
    doc["discovery"] = {
        "url": snap.url,
        "transport": snap.transport,
        "stateful": snap.stateful,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "truncated": snap.truncated,
        "errors": snap.errors,
    }
    return doc


def _one_line(text: Any, width: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


def _capability_line(kind: str, entry: dict[str, Any]) -> str:
    key = entry_key(kind, entry)
    if kind == "tools":
        props = (entry.get("inputSchema") or {}).get("properties")
        required = set((entry.get("inputSchema") or {}).get("required") or ())
        names = [p if p in required else p + "?" for p in props] if isinstance(props, dict) else []
        head = f"{key}({', '.join(names)})"
    elif kind == "prompts":
        args = [a for a in entry.get("arguments") or () if isinstance(a, dict)]
        head = f"{key}({', '.join(str(a.get('name')) + ('' if a.get('required') else '?') for a in args)})"
    else:
        name = entry.get("name")
        head = f"{key}" + (f"  [{name}]" if isinstance(name, str) and name and name != key else "")
    desc = entry.get("description") or entry.get("title") or ""
    line = f"  {head}"
    if desc:
        line += "  — " + _one_line(desc, max(20, LINE_WIDTH - len(line) - 4))
    return line


def _plural(n: int, kind: str) -> str:
    one, many = KIND_LABELS[kind]
    return f"{n} {one if n == 1 else many}"


def text_report(snap: Snapshot, found: dict[str, Any]) -> str:
    info = snap.server_info
    version = info.get("version")
    title = info.get("title")
    era = ("stateless (server/discover)" if snap.supported_versions is not None
           else "stateful session" if snap.stateful else "initialize handshake, no session id")
    transport = "HTTP+SSE" if snap.transport == "sse" else "streamable HTTP"
    lines = [
        f"server       {snap.name}" + (f" {version}" if version else "") + (f" — {title}" if title else ""),
        f"url          {snap.url}",
        f"protocol     {snap.protocol_version} over {transport}, {era}",
        f"announces    {', '.join(sorted(snap.capabilities)) or 'nothing'}",
        f"counts       {', '.join(_plural(len(snap.lists[k]), k) for k in KINDS if k in snap.lists) or 'no lists'}",
    ]
    if snap.instructions:
        lines.append(f"instructions {_one_line(snap.instructions, LINE_WIDTH - 13)}")
    for kind in snap.truncated:
        lines.append(f"WARNING      {kind} list truncated (page or item bound reached): not a complete spec")
    for kind, err in snap.errors.items():
        lines.append(f"ERROR        {kind}: {err}")
    for kind in KINDS:
        if kind not in snap.lists:
            continue
        lines.append("")
        lines.append(f"{KIND_LABELS[kind][1]} ({len(snap.lists[kind])})")
        for entry in snap.lists[kind]:
            lines.append(_capability_line(kind, entry))
    lines.append("")
    lines.append("findings")
    n = 0
    for kind in KINDS:
        for name, f in found.get(kind, {}).items():
            where: dict[str, list[str]] = {}          # one line per finding type: where it was seen
            for s in f.get("sensitive", ()):
                where.setdefault(f"{s['category']}/{s['type']}", []).append(s["where"])
            for what, places in where.items():
                lines.append(f"  {KIND_LABELS[kind][0]} {name}: {what} at {', '.join(places)}")
                n += 1
            for h in f.get("hiddenInstructions", ()):
                lines.append(f"  {KIND_LABELS[kind][0]} {name}: hidden instruction ({h['flag']}) in {h['where']}")
                n += 1
    for h in found.get("server", {}).get("hiddenInstructions", ()):
        lines.append(f"  server: hidden instruction ({h['flag']}) in {h['where']}")
        n += 1
    if n == 0:
        lines.append("  none")
    return "\n".join(lines) + "\n"
