"""Active discovery: act as an MCP client and fetch everything a server publishes.

What the official `mcp` SDK does here (all the protocol work): `mcp.Client(mode="auto")` over its
streamable HTTP transport negotiates the version. It sends `server/discover` at 2026-07-28 (the
`_meta` stamp and the `Mcp-Method`/`Mcp-Name` headers included) and, when a server does not speak
it, falls back to the `initialize` handshake (2025-xx: `mcp-session-id`, the GET stream, DELETE of
the session on close). A 2024-11-05 server is reached with `mcp.client.sse.sse_client`.

Hand-written, and why:

* **Transport fallback.** `Client` never falls back from streamable HTTP to the 2024-11-05
  HTTP+SSE transport. The spec's backwards-compatibility rule is followed: a POST answered 404
  or 405 (or a URL whose path ends in `/sse`) means "try the GET event stream".
* **Raw list results.** `Client.list_*` return pydantic models, and dumping those is not what the
  server sent (defaults filled in, unknown members dropped). The spec store hashes each entry to
  detect drift, so discovery must hold exactly the JSON that traffic learning sees, or every
  refresh would look like a change. Lists go through the SDK session's own
  `send_request` (so the negotiated version's stamp and headers are applied) with a plain dict
  result type.
* **Paging with bounds.** Every announced list is walked along `nextCursor`, at most
  `max_pages` pages and `max_items` items per list, stopping on a repeated cursor. A walk that
  hits a bound is reported as truncated, never as complete.
* **Error wording.** The SDK reports HTTP 401/403/404 as generic JSON-RPC errors. An httpx event
  hook records each HTTP status, so a failure can say "authentication refused", "not an MCP
  endpoint" or "cannot connect" in one line.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from extauthz.mcp.kinds import Kind

log = logging.getLogger("extauthz.discovery")

__all__ = ["DiscoveryError", "Snapshot", "discover", "MAX_PAGES", "MAX_ITEMS"]

MAX_PAGES = 100
MAX_ITEMS = 10000
ANNOUNCED_BY = {"tools": "tools", "resources": "resources", "resourceTemplates": "resources", "prompts": "prompts"}
CLIENT_NAME = "extauthz-discover"


class DiscoveryError(Exception):
    """Discovery failed; the message is one line fit for an operator."""


@dataclass(slots=True)
class Snapshot:
    """What one discovery run found. `lists` holds only the kinds the server announced; a kind in
    `errors` or `truncated` is not a complete list."""

    url: str
    transport: str                       # "streamable-http" | "sse"
    protocol_version: str
    server_info: dict[str, Any]
    capabilities: dict[str, Any]
    instructions: str | None = None
    supported_versions: list[str] | None = None
    stateful: bool = False               # the server issued an mcp-session-id
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def complete(self, kind: str) -> bool:
        return kind in self.lists and kind not in self.truncated and kind not in self.errors

    @property
    def name(self) -> str:
        n = self.server_info.get("name")
        return n if isinstance(n, str) and n else (urllib.parse.urlsplit(self.url).netloc or self.url)


@dataclass(slots=True)
class _Seen:
    """HTTP answers observed by the event hook."""

    statuses: list[tuple[str, int, str]] = field(default_factory=list)     # (method, status, content-type)
    session: bool = False

    async def hook(self, response: Any) -> None:
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        self.statuses.append((response.request.method, response.status_code, ctype))
        if response.headers.get("mcp-session-id"):
            self.session = True

    def first(self, method: str) -> tuple[int, str] | None:
        for m, status, ctype in self.statuses:
            if m == method:
                return status, ctype
        return None


async def discover(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0,
                   max_pages: int = MAX_PAGES, max_items: int = MAX_ITEMS, mode: str = "auto") -> Snapshot:
    """Discover the server at `url`, whatever protocol version it speaks. `headers` go on every
    request. `mode` is the SDK's: "auto" (server/discover, else initialize) or "legacy" (always
    the initialize handshake). Raises DiscoveryError (one line) when the server is unreachable,
    refuses the credentials, or is not MCP; a list the server answers with an error is recorded
    in `Snapshot.errors` instead."""
    import anyio

    headers = dict(headers or {})
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    seen = _Seen()
    try:
        with anyio.fail_after(timeout):
            if path.endswith("/sse"):
                return await _via_sse(url, headers, timeout, seen, max_pages, max_items)
            try:
                return await _via_streamable(url, headers, timeout, seen, max_pages, max_items, mode)
            except Exception as first:
                post = seen.first("POST")
                if post is None or post[0] not in (404, 405):
                    raise
                sse_seen = _Seen()
                try:
                    return await _via_sse(url, headers, timeout, sse_seen, max_pages, max_items)
                except Exception as e:
                    get = sse_seen.first("GET")
                    if get is not None and get[0] in (401, 403):
                        raise DiscoveryError(_explain(e, sse_seen, url, timeout)) from None
                    also = ""
                    if get is not None and get[0] < 300:
                        also = f"; GET for HTTP+SSE answered {get[1] or 'no content type'}, not an event stream"
                    elif get is not None:
                        also = f"; GET for HTTP+SSE answered HTTP {get[0]}"
                    raise DiscoveryError(_explain(first, seen, url, timeout) + also) from None
    except DiscoveryError:
        raise
    except BaseException as e:       # noqa: BLE001 - every failure becomes one line
        if isinstance(e, (KeyboardInterrupt, SystemExit)) or _is_cancel(e):
            raise
        raise DiscoveryError(_explain(e, seen, url, timeout)) from None


def _client_info() -> Any:
    import mcp_types as types

    from extauthz import __version__ as version
    return types.Implementation(name=CLIENT_NAME, version=str(version or "0"))


_SSL_CONTEXT: Any = None


def _ssl_context() -> Any:
    """One TLS context for every discovery run: building one loads the CA bundle, milliseconds of
    CPU on the event loop that every Check would wait behind (a dead upstream is retried often)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import ssl
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


def _http_client(headers: dict[str, str], timeout: float, seen: _Seen, **_: Any) -> Any:
    """What the SDK's `create_mcp_http_client` builds (headers, timeout), with the shared TLS context."""
    import httpx2

    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout), verify=_ssl_context())
    client.event_hooks["response"].append(seen.hook)
    return client


async def _via_streamable(url: str, headers: dict[str, str], timeout: float, seen: _Seen,
                          max_pages: int, max_items: int, mode: str) -> Snapshot:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with _http_client(headers, timeout, seen) as http:
        transport = streamable_http_client(url, http_client=http)      # DELETEs the session on close
        async with Client(transport, mode=mode, cache=None, client_info=_client_info(),
                          read_timeout_seconds=timeout) as client:
            snap = await _collect(client, url, "streamable-http", max_pages, max_items)
        snap.stateful = seen.session
        return snap


async def _via_sse(url: str, headers: dict[str, str], timeout: float, seen: _Seen,
                   max_pages: int, max_items: int) -> Snapshot:
    from mcp import Client
    from mcp.client.sse import sse_client

    def factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
        import httpx2
        from mcp.shared._httpx_utils import create_mcp_http_client
        client = create_mcp_http_client(headers=headers, timeout=timeout or httpx2.Timeout(30.0), auth=auth)
        client.event_hooks["response"].append(seen.hook)
        return client

    transport = sse_client(url, headers=headers, timeout=timeout, sse_read_timeout=timeout,
                           httpx_client_factory=factory)
    async with Client(transport, mode="legacy", cache=None, client_info=_client_info(),
                      read_timeout_seconds=timeout) as client:
        snap = await _collect(client, url, "sse", max_pages, max_items)
    snap.stateful = True
    return snap


async def _collect(client: Any, url: str, transport: str, max_pages: int, max_items: int) -> Snapshot:
    session = client.session
    caps = _dump(client.server_capabilities)
    info = _dump(client.server_info) if client.server_info is not None else {}
    supported = None
    if session.discover_result is not None:
        supported = list(session.discover_result.supported_versions)
    snap = Snapshot(url=url, transport=transport, protocol_version=client.protocol_version, server_info=info,
                    capabilities=caps, instructions=client.instructions, supported_versions=supported)
    for k in Kind:
        kind, method = k.value, k.list_method
        if caps.get(ANNOUNCED_BY[kind]) is None:
            continue
        items, truncated, error = await _list_all(session, kind, method, max_pages, max_items)
        snap.lists[kind] = items
        if truncated:
            snap.truncated.append(kind)
        if error:
            snap.errors[kind] = error
    return snap


async def _list_all(session: Any, kind: str, method: str, max_pages: int,
                    max_items: int) -> tuple[list[dict[str, Any]], bool, str | None]:
    """Every page of one list: (items, truncated, error)."""
    import mcp_types as types
    from mcp.shared.exceptions import MCPError
    from mcp_types import METHOD_NOT_FOUND
    from pydantic import TypeAdapter, ValidationError

    request_type = {"tools": types.ListToolsRequest, "resources": types.ListResourcesRequest,
                    "resourceTemplates": types.ListResourceTemplatesRequest,
                    "prompts": types.ListPromptsRequest}[kind]
    raw_result = TypeAdapter(dict[str, Any])
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    cursors: set[str] = set()
    for _ in range(max_pages):
        try:
            raw = await session.send_request(request_type(params=types.PaginatedRequestParams(cursor=cursor)),
                                             raw_result)
        except MCPError as e:
            if e.code == METHOD_NOT_FOUND and kind == "resourceTemplates" and cursor is None:
                return [], False, None      # `resources` announced, templates not served: there are none
            return items, False, f"{method} failed: {e.message} (code {e.code})"
        except ValidationError as e:
            return items, False, f"{method} result is not valid MCP: {_first_validation_error(e)}"
        page = raw.get(kind)
        if not isinstance(page, list):
            return items, False, f"{method} result has no {kind!r} list"
        items.extend(x for x in page if isinstance(x, dict))
        if len(items) > max_items:
            del items[max_items:]
            return items, True, None
        nxt = raw.get("nextCursor")
        if not isinstance(nxt, str) or not nxt:
            return items, False, None
        if nxt in cursors:
            log.warning("%s repeated cursor %r: stopping", method, nxt[:80])
            return items, True, None
        cursors.add(nxt)
        cursor = nxt
    return items, True, None


def _dump(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    dumped = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped if isinstance(dumped, dict) else {}


def _first_validation_error(e: Any) -> str:
    try:
        err = e.errors()[0]
        where = "/".join(str(p) for p in err.get("loc", ()))
        return f"{where}: {err.get('msg', '')}"[:200]
    except Exception:  # noqa: BLE001
        return str(e).splitlines()[0][:200]


# -- turning failures into one line ---------------------------------------------------------------

def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in e.exceptions:
            out.extend(_leaves(sub))
        return out
    return [e]


def _is_cancel(e: BaseException) -> bool:
    import asyncio
    leaves = _leaves(e)
    return bool(leaves) and all(isinstance(x, asyncio.CancelledError) for x in leaves)


def _explain(e: BaseException, seen: _Seen, url: str, timeout: float) -> str:
    import httpx2
    from mcp.shared.exceptions import MCPError

    refused = [s for _, s, _ in seen.statuses if s in (401, 403)]
    if refused:
        return (f"{url}: authentication refused (HTTP {refused[-1]}); pass credentials with "
                f"-H 'Authorization: Bearer ...'")
    leaves = [x for x in _leaves(e) if not _is_cancel(x)] or [e]
    leaf = leaves[0]
    for x in leaves:               # prefer the most telling cause
        if isinstance(x, (httpx2.TransportError, OSError, TimeoutError)):
            leaf = x
            break
    if isinstance(leaf, (TimeoutError, httpx2.TimeoutException)):
        return f"{url}: no complete answer within {timeout:g}s"
    if isinstance(leaf, (httpx2.ConnectError, OSError)):
        cause = str(leaf) or type(leaf).__name__
        return f"cannot connect to {url}: {cause}"
    if isinstance(leaf, httpx2.TransportError):
        return f"{url}: connection failed: {leaf or type(leaf).__name__}"
    bad = [(m, s, c) for m, s, c in seen.statuses if s >= 400]
    if bad:
        m, s, c = bad[0]
        return f"{url} is not an MCP endpoint: {m} answered HTTP {s}{f' ({c})' if c else ''}"
    odd = [(m, s, c) for m, s, c in seen.statuses
           if m == "POST" and s == 200 and c not in ("application/json", "text/event-stream")]
    if odd:
        return f"{url} is not an MCP endpoint: POST answered {odd[0][2] or 'no content type'}"
    if isinstance(leaf, httpx2.HTTPStatusError):
        return f"{url} is not an MCP endpoint: HTTP {leaf.response.status_code}"
    if isinstance(leaf, MCPError):
        return f"{url}: MCP error {leaf.code}: {leaf.message}"
    if type(leaf).__name__ == "ValidationError":
        return f"{url}: the answer is not valid MCP: {_first_validation_error(leaf)}"
    text = str(leaf).splitlines()[0] if str(leaf) else ""
    return f"{url}: {type(leaf).__name__}{': ' + text[:200] if text else ''}"


def silence_sdk_logs() -> None:
    """The SDK logs transport failures with tracebacks (and retries them in the background);
    discovery reports each failure itself, in one line, so the SDK's own records are dropped."""
    for name in ("mcp", "httpx2"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
