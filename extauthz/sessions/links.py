"""Resource links a tool returned: readable by the session (stateless: the caller) they were
returned to, even though `resources/list` never named them (the spec says links need not be listed).

How a link gets here, reliably: the results of tools that may return links are read on the
*learn* route (`AnswerPlan.await_result`), where Envoy holds each response chunk until ext_proc has
answered it, so the grant exists before the client has the result and can ask for the link. Which
tools: every tool until `PROVE` of its results came back without a link, and for good any tool
once seen returning one (including by the sampled observation of a tool judged link-free before).
A read of an unlisted URI is then allowed only on a live grant for this (server, session, caller);
anything else (another session or caller, an expired or evicted grant, a result still in flight in
another worker) stays `unknown_capability`, the safe default. Resource `allow` rules still apply.

Bounds: `MAX_PER_PARTITION` links per (server, session, caller) (oldest dropped), `MAX_GRANTS` in
all (oldest partition dropped), each for `TTL_SECONDS`; URIs are kept as 16-byte digests, so a
grant costs ~150 B whatever the URI's length (~30 MB with every bound full).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from extauthz.mcp.names import uri_problem
from extauthz.shared.changes import LinkGranted, Sink, emit

MAX_PER_PARTITION = 256
MAX_GRANTS = 200_000
MAX_PER_RESULT = 64            # links taken from one result
TTL_SECONDS = 3600.0
PROVE = 3                      # results of a tool read (awaited) before it counts as link-free
MAX_TOOLS = 50_000
_LINKS = -1                    # tool state: seen returning a resource link

Partition = tuple[str, str, str]     # (server, MCP session id or "", caller key)


def _digest(uri: str) -> bytes:
    return hashlib.blake2b(uri.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def links_in(result: Any) -> list[str]:
    """URIs of the `resource_link` items of a (successful) tools/call result, clean ones only."""
    if type(result) is not dict or result.get("isError") is True:
        return []
    content = result.get("content")
    if type(content) is not list:
        return []
    out: list[str] = []
    for item in content:
        if type(item) is dict and item.get("type") == "resource_link":
            uri = item.get("uri")
            if type(uri) is str and uri_problem(uri) is None and uri not in out:
                out.append(uri)
                if len(out) >= MAX_PER_RESULT:
                    break
    return out


LinkView = dict[bytes, float]      # what one session (caller) was granted: URI digest -> expiry


class Links(Protocol):
    """The seam: resource links granted per (server, session, caller), as Check and transports use it."""
    on_change: Sink | None

    def grant(self, server: str, session_id: str, caller: str, uris: list[str], *, tool: str = "") -> None: ...
    def view(self, server: str, session_id: str, caller: str) -> LinkView | None: ...
    def granted(self, links: LinkView | None, uri: str) -> bool: ...
    def apply(self, change: LinkGranted) -> None: ...


class LinkGrants:
    def __init__(self, *, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._grants: OrderedDict[Partition, dict[bytes, float]] = OrderedDict()
        self._total = 0
        self._tools: dict[tuple[str, str], int] = {}      # (server, tool) -> link-free results, or _LINKS
        # (op, payload) for other workers (set by the workers bus)
        self.on_change: Sink | None = None

    def __len__(self) -> int:
        return self._total

    # -- which results to read ------------------------------------------------------------------
    def wants(self, server: str, tool: str) -> bool:
        """Should this call's result be read before the client gets it? (Check path: one lookup.)"""
        state = self._tools.get((server, tool))
        if state is None:
            return True
        return state == _LINKS or state < PROVE

    def observed(self, server: str, session_id: str, caller: str, tool: str, result: Any) -> list[str]:
        """A tools/call result was read (awaited or sampled): learn whether the tool returns links,
        and grant the ones it returned to this session/caller. Returns the granted URIs."""
        uris = links_in(result)
        key = (server, tool)
        state = self._tools.get(key)
        if uris:
            if state is not None or len(self._tools) < MAX_TOOLS:
                self._tools[key] = _LINKS
            self.grant(server, session_id, caller, uris, tool=tool)
        elif state is None:
            if len(self._tools) < MAX_TOOLS:
                self._tools[key] = 1
        elif state != _LINKS and state < PROVE:
            self._tools[key] = state + 1
        return uris

    # -- grants ---------------------------------------------------------------------------------
    def grant(self, server: str, session_id: str, caller: str, uris: list[str], *, tool: str = "") -> None:
        """Links a tool returned here: granted, and published."""
        if self._grant(server, session_id, caller, uris, tool, relayed=False):
            emit(self.on_change, LinkGranted(server, session_id, caller, tuple(uris), tool))

    def apply(self, change: LinkGranted) -> None:
        """A grant made elsewhere (not published again); its tool is known to return links."""
        if not isinstance(change, LinkGranted):
            raise TypeError(f"not a link change: {change!r}")
        self._grant(change.server, change.sid, change.caller, list(change.uris), change.tool, relayed=True)

    def _grant(self, server: str, session_id: str, caller: str, uris: list[str], tool: str, *,
               relayed: bool) -> bool:
        if not caller or caller == "-":
            return False                            # nobody to bind the link to
        if tool and relayed:
            key = (server, tool)
            if key in self._tools or len(self._tools) < MAX_TOOLS:
                self._tools[key] = _LINKS
        part = (server, session_id, caller)
        links = self._grants.get(part)
        if links is None:
            links = self._grants[part] = {}
        else:
            self._grants.move_to_end(part)
        expires = self.clock() + self.ttl
        for uri in uris:
            d = _digest(uri)
            if d in links:
                del links[d]                        # re-granted: newest again
                self._total -= 1
            elif len(links) >= MAX_PER_PARTITION:
                del links[next(iter(links))]
                self._total -= 1
            links[d] = expires
            self._total += 1
        while self._total > MAX_GRANTS and self._grants:
            _, dropped = self._grants.popitem(last=False)
            self._total -= len(dropped)
        return True

    def view(self, server: str, session_id: str, caller: str) -> dict[bytes, float] | None:
        """This partition's grants, or None (Check path: one dict lookup)."""
        return self._grants.get((server, session_id, caller)) if self._grants else None

    def granted(self, links: dict[bytes, float] | None, uri: str) -> bool:
        if not links:
            return False
        expires = links.get(_digest(uri))
        return expires is not None and expires > self.clock()

    def end_session(self, server: str, session_id: str, caller: str) -> None:
        dropped = self._grants.pop((server, session_id, caller), None)
        if dropped:
            self._total -= len(dropped)
