"""Ending a session binding when the server confirms the session ended, never before.

An owner's allowed DELETE passes the Check with the learn header set to `session-end:<base64url of
the session id>` (the same header and Envoy route as learning, so no Envoy config changes). ext_proc
then shows us the server's answer: a 2xx (the server terminated it) or a 404 (the server has no
such session) ends the binding; anything else (405 for a DELETE the server does not support or
whose protocol version it refuses, 307 from a framework redirect, 5xx, a reset) keeps it, so the
owner stays the owner of a session that is still alive. A header that does not decode exactly
ends nothing (fail closed: the binding stays until the idle TTL).
"""

from __future__ import annotations

import logging

from extauthz.mcp.learnheader import decode_end_mark
from extauthz.specs.exchange import Exchange
from extauthz.specs.learn import Learner

log = logging.getLogger("extauthz.sessions.ending")

__all__ = ["end_exchange", "SessionEndExchange", "outcome_of"]


def outcome_of(status: int | None) -> str:
    """What the server's answer to a DELETE means for the binding."""
    if status is not None and 200 <= status < 300:
        return "ended"
    if status == 404:
        return "not_found"          # the streamable HTTP transport's "no such session"
    return "refused"


class SessionEndExchange(Exchange):
    """The response to an owner's DELETE: only its status matters; the body is not read."""

    @property
    def done(self) -> bool:
        return self.finished

    def on_response_headers(self, status: int | str | None, headers: dict[str, str]) -> None:
        if self.finished:
            return
        try:
            code: int | None = int(status)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            code = None
        self.status = code
        self._release()
        hook = self.learner.on_session_end
        if hook is None:
            return
        try:
            hook(self.server, self.session_id, outcome_of(code))
        except Exception:  # noqa: BLE001 - the response goes on whatever we do with it
            log.exception("on_session_end hook failed for %s", self.server)


def end_exchange(learner: Learner, server: str | None, caller: str | None, session_header: str | None,
                 value: str) -> Exchange | None:
    """An exchange for a marked DELETE, or None (logged) when the mark is malformed or names a
    session other than the one the request carries."""
    sid = decode_end_mark(value)
    if not server or sid is None or sid != session_header:
        log.warning("ignoring malformed session-end mark for server %s: the binding stays", server)
        return None
    return SessionEndExchange(learner, server, caller or "", sid, [])
