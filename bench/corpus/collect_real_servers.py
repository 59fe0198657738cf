"""Collect the published lists of real MCP servers into tests/corpus/real_servers.json.

Installs pinned packages (npm reference servers into .cache/corpus/npm, PyPI reference servers into
their own venv .cache/corpus/venv, since they pin the 1.x `mcp` SDK while the main venv has 2.x),
runs each over stdio with the MCP SDK client, and records every tool, prompt, resource and resource
template exactly as listed (name, description, schemas with their property descriptions), with the
package and version. Also adds tool lists that real servers publish as snapshot files in their
repositories (`--snapshots GIT_DIR:REPO:PATH`, e.g. github-mcp-server's `pkg/github/__toolsnaps__`).

    python bench/corpus/collect_real_servers.py \
        [--snapshots GIT_DIR:github/github-mcp-server:pkg/github/__toolsnaps__]

A server that fails to start or to answer one list is reported and skipped (its other lists stay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "corpus"
OUT = ROOT / "tests" / "corpus" / "real_servers.json"

# (package, version, argv after the binary, env): dummy credentials only make the servers start
# far enough to list; nothing is ever called.
NPM: list[tuple[str, str, list[str], dict[str, str]]] = [
    ("@modelcontextprotocol/server-filesystem", "2026.8.31", ["{tmp}"], {}),
    ("@modelcontextprotocol/server-memory", "2026.8.31", [], {"MEMORY_FILE_PATH": "{tmp}/memory.jsonl"}),
    ("@modelcontextprotocol/server-sequential-thinking", "2026.8.31", [], {}),
    ("@modelcontextprotocol/server-everything", "2026.8.31", ["stdio"], {}),
    ("@modelcontextprotocol/server-github", "2025.4.8", [], {"GITHUB_PERSONAL_ACCESS_TOKEN": "x"}),
    ("@modelcontextprotocol/server-slack", "2025.4.25", [], {"SLACK_BOT_TOKEN": "x", "SLACK_TEAM_ID": "T0"}),
    ("@modelcontextprotocol/server-puppeteer", "2025.5.12", [], {}),
    ("@modelcontextprotocol/server-brave-search", "0.6.2", [], {"BRAVE_API_KEY": "x"}),
    ("@modelcontextprotocol/server-google-maps", "0.6.2", [], {"GOOGLE_MAPS_API_KEY": "x"}),
    ("@modelcontextprotocol/server-aws-kb-retrieval", "0.6.2", [],
     {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}),
    ("@modelcontextprotocol/server-everart", "0.6.2", [], {"EVERART_API_KEY": "x"}),
    ("@modelcontextprotocol/server-postgres", "0.6.2", ["postgresql://127.0.0.1:1/x"], {}),
    ("@notionhq/notion-mcp-server", "2.5.2", [], {"NOTION_TOKEN": "x"}),
    ("@playwright/mcp", "0.0.83", [], {}),
    ("@upstash/context7-mcp", "4.1.1", [], {}),
    ("@supabase/mcp-server-supabase", "0.13.0", ["--access-token=x"], {}),
    ("@sentry/mcp-server", "0.39.0", ["--access-token=x"], {}),
    ("firecrawl-mcp", "3.26.0", [], {"FIRECRAWL_API_KEY": "x"}),
    ("tavily-mcp", "0.2.22", [], {"TAVILY_API_KEY": "x"}),
    ("exa-mcp-server", "3.4.1", [], {"EXA_API_KEY": "x"}),
    ("@wonderwhy-er/desktop-commander", "0.2.52", [], {}),
    ("@hubspot/mcp-server", "0.4.0", [], {"PRIVATE_APP_ACCESS_TOKEN": "x"}),
    ("chrome-devtools-mcp", "1.11.0", [], {}),
    ("mcp-server-kubernetes", "4.1.7", [], {}),
]
# Left out: server-gitlab (its schemas lack "type": the SDK client rejects the list), server-redis
# (needs a live Redis to start), @stripe/mcp 0.3 (proxies to mcp.stripe.com), @heroku/mcp-server 1.2.8
# (fails to start: missing SDK module), PyPI mcp-server-sqlite 2025.4.25 (fails to start against the
# current 1.x/2.x SDK: `Server.list_resources` is gone).
# (distribution, version, console script, argv)
PYPI: list[tuple[str, str, str, list[str]]] = [
    ("mcp-server-fetch", "2026.10.24", "mcp-server-fetch", []),
    ("mcp-server-git", "2026.10.19", "mcp-server-git", ["--repository", "{repo}"]),
    ("mcp-server-time", "2026.10.19", "mcp-server-time", ["--local-timezone", "UTC"]),
]
KINDS = ("tools", "prompts", "resources", "resourceTemplates")


def _install() -> None:
    for package, version, _, _ in NPM:       # one prefix each: their dependency trees conflict
        prefix = _prefix(package)
        if not (prefix / "node_modules" / package / "package.json").exists():
            prefix.mkdir(parents=True, exist_ok=True)
            # --ignore-scripts: no browser downloads; listing never runs them
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix",
                                str(prefix), f"{package}@{version}"], capture_output=True, text=True)
            if r.returncode:
                print(f"  npm install {package}@{version} failed: {r.stderr[-300:]}", file=sys.stderr)
    venv = CACHE / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *[f"{d}=={v}" for d, v, _, _ in PYPI]], check=True)


def _prefix(package: str) -> Path:
    return CACHE / "npm" / package.replace("/", "+")


def _bin(package: str) -> list[str]:
    pkg = _prefix(package) / "node_modules" / package / "package.json"
    meta = json.loads(pkg.read_text())
    bins = meta.get("bin")
    rel = bins if isinstance(bins, str) else next(iter(bins.values()))
    return ["node", str(pkg.parent / rel)]


async def _list(argv: list[str], env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    from mcp import Client, StdioServerParameters

    out: dict[str, list[dict[str, Any]]] = {}
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    async with Client(params, mode="legacy", read_timeout_seconds=30) as client:
        for kind, method in (("tools", client.list_tools), ("prompts", client.list_prompts),
                             ("resources", client.list_resources),
                             ("resourceTemplates", client.list_resource_templates)):
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            try:
                for _ in range(100):
                    page = await asyncio.wait_for(method(cursor=cursor), 30)
                    dumped = page.model_dump(by_alias=True, exclude_none=True, mode="json")
                    items.extend(dumped.get(kind, []))
                    cursor = page.next_cursor
                    if not cursor:
                        break
            except Exception as e:  # noqa: BLE001 - a server may not offer every kind
                print(f"    {kind}: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
            if items:
                out[kind] = items
    return out


def _entries(source: dict[str, Any], lists: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"source": source["id"], "kind": kind, "name": item.get("name") or item.get("uri") or
             item.get("uriTemplate", ""), "raw": item} for kind in KINDS for item in lists.get(kind, [])]


async def _servers(tmp: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sources: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    repo = Path(tmp) / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    runs: list[tuple[dict[str, Any], list[str], dict[str, str]]] = []
    for package, version, args, env in NPM:
        if not (_prefix(package) / "node_modules" / package / "package.json").exists():
            continue
        src = {"id": f"npm:{package}@{version}", "ecosystem": "npm", "package": package, "version": version}
        runs.append((src, _bin(package) + [a.format(tmp=tmp) for a in args],
                     {k: v.format(tmp=tmp) for k, v in env.items()}))
    for dist, version, module, args in PYPI:
        src = {"id": f"pypi:{dist}=={version}", "ecosystem": "pypi", "package": dist, "version": version}
        runs.append((src, [str(CACHE / "venv" / "bin" / module)] +
                     [a.format(tmp=tmp, repo=repo) for a in args], {}))
    for src, argv, env in runs:
        print(f"  {src['id']}", file=sys.stderr)
        try:
            lists = await asyncio.wait_for(_list(argv, {**env, "PATH": os.environ["PATH"], "HOME": tmp}), 120)
        except BaseException as e:  # noqa: BLE001 - one broken server must not stop the collection
            if isinstance(e, KeyboardInterrupt):
                raise
            print(f"    skipped: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            continue
        got = _entries(src, lists)
        if got:
            sources.append(src)
            entries.extend(got)
    return sources, entries


def _snapshots(spec: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GIT_DIR:OWNER/REPO:PATH -> the repository's tool snapshot files (*.snap, one tool each) at HEAD."""
    git_dir, repo, path = spec.split(":")

    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True,
                              text=True).stdout
    commit = git("rev-parse", "HEAD").strip()
    src = {"id": f"github:{repo}@{commit[:12]}", "ecosystem": "github", "repo": repo, "commit": commit,
           "path": path}
    entries = []
    for name in sorted(git("ls-tree", "--name-only", "HEAD", path.rstrip("/") + "/").split()):
        if not name.endswith(".snap"):
            continue
        raw = json.loads(git("show", f"HEAD:{name}"))
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            entries.append({"source": src["id"], "kind": "tools", "name": raw["name"], "raw": raw,
                            "file": name})
    return src, entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", action="append", default=[], help="GIT_DIR:OWNER/REPO:PATH of *.snap tool files")
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    if not a.no_install:
        _install()
    with tempfile.TemporaryDirectory() as tmp:
        sources, entries = asyncio.run(_servers(tmp))
    for spec in a.snapshots:
        src, got = _snapshots(spec)
        sources.append(src)
        entries.extend(got)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"about": "published lists of real MCP servers, collected by "
                               "bench/corpus/collect_real_servers.py; every entry is benign",
                               "sources": sources, "entries": entries}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(entries)} entries from {len(sources)} sources -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
