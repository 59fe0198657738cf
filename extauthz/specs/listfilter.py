"""Filtering `*/list` results for one caller, failing closed.

The Check does not send the caller's view (issuer, subject, client, groups) to ext_proc: a view
that travels in a header grows with the token's `groups`, and a header over its bound used to be
ignored, which passed the whole list through. It sends a fixed-size *fingerprint* of the view
instead; ext_proc resolves the caller itself from the verified identity Envoy hands it (the
jwt_authn claims forwarded with `metadata_options.forwarding_namespaces`, or Istio's
`x-jwt-payload` header), with the policy's own identity sources, and filters only when both
resolve to the same view. An mTLS caller (no claims, a certificate-bound principal) still travels
inline.

Whatever cannot be filtered for its caller is shown as an empty list: `blank` keeps the JSON-RPC
id and what the protocol needs (`resultType`), drops `nextCursor` (a client would page on into
items it may not see) and says `cacheScope: "private"`. `FAILURES` are the bounded reasons counted
in `mcp_extauthz_list_filter_failures_total`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from extauthz.mcp.kinds import KIND_NAMES

__all__ = ["View", "ANONYMOUS", "ViewRef", "fingerprint", "view_ref", "list_kind_of", "filtered", "blank",
           "unreadable_body", "FAILURES", "LIST_FIELDS"]

# The list field of each list result (`tools/list` -> `tools`, ...): also how a list result is
# recognised by its shape when the request it answers is unknown.
LIST_FIELDS = KIND_NAMES

FAILURES = frozenset({
    "marker_malformed",     # the learn header could not be read
    "no_server",            # the learn header came without the server the Check matched
    "view_unresolved",      # ext_proc could not resolve the caller (no claims forwarded, bad claims)
    "view_mismatch",        # ext_proc resolved another caller than the Check decided for
    "filter_error",         # the policy lookup or the filter raised
    "body_unreadable",      # a 2xx list response that is not JSON we can parse
    "body_too_large",       # over the rewriter's bound
    "body_encoded",         # content-encoding other than identity
    "internal_error",       # anything else while starting the exchange
})


@dataclass(frozen=True, slots=True)
class View:
    """Who asked, as far as `allow` rules need it. An empty subject is the anonymous caller."""

    issuer: str
    subject: str
    client_id: str
    groups: tuple[str, ...]

    def to_json(self) -> list[Any]:
        return [self.issuer, self.subject, self.client_id, list(self.groups)]

    @classmethod
    def from_json(cls, v: Any) -> View | None:
        """None unless `v` is exactly what `to_json` writes."""
        if isinstance(v, list) and len(v) == 4 and all(isinstance(x, str) for x in v[:3]) \
                and isinstance(v[3], list) and all(isinstance(g, str) for g in v[3]):
            return cls(v[0], v[1], v[2], tuple(v[3]))
        return None

    @classmethod
    def of(cls, caller: Any) -> View:
        """The view of an `extauthz.identity.caller.Caller` (None: anonymous). Built once per
        caller object (the identity sources cache those per claims): 200 groups are sorted once."""
        if caller is None:
            return ANONYMOUS
        hit = _views.get(id(caller))
        if hit is not None and hit[0] is caller:
            return hit[1]
        view = cls(caller.issuer, caller.subject, caller.client_id, tuple(sorted(caller.groups)))
        if len(_views) >= 4096:
            _views.clear()
        _views[id(caller)] = (caller, view)     # holds the caller: its id cannot be reused meanwhile
        return view

    @property
    def anonymous(self) -> bool:
        return not self.subject


ANONYMOUS = View("", "", "", ())
_views: dict[int, tuple[Any, View]] = {}

# What the learn header carries for a view: its fingerprint (resolved again by ext_proc) or, for an
# mTLS caller, the view itself.
ViewRef = View | str


@functools.lru_cache(maxsize=4096)
def fingerprint(view: View) -> str:
    """A fixed-size digest of a view: equal views, equal fingerprints (groups are sorted by `of`)."""
    raw = orjson.dumps([view.issuer, view.subject, view.client_id, sorted(view.groups)])
    return base64.urlsafe_b64encode(hashlib.blake2b(raw, digest_size=16).digest()).rstrip(b"=").decode("ascii")


def view_ref(caller: Any) -> ViewRef:
    """What the Check puts in the learn header for this caller's lists."""
    view = View.of(caller)
    if caller is not None and getattr(caller, "source", "") == "mtls":
        return view              # ext_proc is not shown the peer certificate
    return fingerprint(view)


def list_kind_of(result: Any) -> str | None:
    """The list field a result carries, if it looks like a list result."""
    if not isinstance(result, dict):
        return None
    return next((k for k in LIST_FIELDS if k in result), None)


def blank(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    """The same response with nothing listed."""
    result = msg.get("result")
    out: dict[str, Any] = {}
    if isinstance(result, dict):
        if isinstance(result.get("resultType"), str):
            out["resultType"] = result["resultType"]
        if isinstance(result.get("ttlMs"), int) and not isinstance(result.get("ttlMs"), bool):
            out["ttlMs"] = result["ttlMs"]
    out[kind] = []
    out["cacheScope"] = "private"
    return {"jsonrpc": "2.0", "id": msg.get("id"), "result": out}


def filtered(msg: dict[str, Any], kind: str, keep: Callable[[str, Any], bool]) -> dict[str, Any]:
    """The caller's view of one list result. Always written out again, even when nothing was
    removed: the client then reads exactly what was filtered (a body with duplicate keys could
    read differently to another parser). A result that says how it may be cached (2026-07-28
    `cacheScope`/`ttlMs`) is made private: another caller may be shown a different list. Absent,
    the protocol's default is already private."""
    result = msg.get("result")
    if not isinstance(result, dict) or not isinstance(result.get(kind), list):
        return blank(msg, kind)           # not a list a client could read safely
    out = {**result, kind: [it for it in result[kind] if keep(kind, it)]}
    if "cacheScope" in result or "ttlMs" in result:
        out["cacheScope"] = "private"
    return {**msg, "result": out}


def unreadable_body() -> bytes:
    """What a caller gets instead of a list response that could not be read to be filtered."""
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32603, "message": "the gateway could not filter this list response for the caller"}})
