"""`extauthz replay`: what would this policy have done with recorded traffic?

Each line of the traffic file is one JSON object, either a request:
  {"method": "POST", "authority": "crm.example.com", "path": "/mcp", "headers": {...},
   "body": <JSON value> | "bodyText": "<raw text>", "claims": {...}, "t": <seconds>}
or a spec the server published, so later requests are decided against it:
  {"spec": {"server": "crm", "tools": [...], "resources": [...], "resourceTemplates": [...], "prompts": [...]}}
Prints one JSON decision per request line (a decision that completed an attack chain carries its
`alert`), then one `{"summary": ...}` line: the MCP sessions seen (who opened them, how many
requests), and per caller the risk score, whether it ended blocked, and every alert with the
sessions and decisions that made it, and `actors`: per caller, the view of `extauthz investigate`
(identity, MCP and user sessions side by side, alerts with their steps, what is kept) without its
timeline (the lines above are it). Sessions and risk are tracked exactly as the service does.

Time is simulated: `t` (seconds since the recording started, never going back) moves the risk
engine's clock, so hours of recorded traffic decay and chain as they did; without `t` a line is
decided at the time of the line before it.
"""

from __future__ import annotations

import io
import math
import sys
import time
from typing import Any, TextIO

import orjson

from extauthz.admin.actor_view import build
from extauthz.admin.actors import gather
from extauthz.app import App
from extauthz.mcp.request import HttpRequest
from extauthz.policy.errors import PolicyError
from extauthz.policy.model import load_policy


def _request(rec: dict[str, Any]) -> HttpRequest:
    headers = {str(k).lower(): str(v) for k, v in (rec.get("headers") or {}).items()}
    if str(rec.get("method", "POST")) == "POST":
        headers.setdefault("content-type", "application/json")   # recordings often omit it
    if "bodyText" in rec:
        body = str(rec["bodyText"]).encode("utf-8", "surrogatepass")
    elif "body" in rec:
        body = orjson.dumps(rec["body"])
    else:
        body = b""
    claims = rec.get("claims")
    return HttpRequest(method=str(rec.get("method", "POST")), path=str(rec.get("path", "/mcp")),
                       authority=str(rec.get("authority", "")), headers=headers, body=body,
                       partial=headers.get("x-envoy-auth-partial-body") == "true",
                       metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}} if claims else {})


class ReplayClock:
    """The risk engine's clock during a replay: `start` plus the latest `t` seen."""

    def __init__(self, start: float) -> None:
        self.start = self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def at(self, t: Any) -> None:
        if type(t) in (int, float) and math.isfinite(t) and self.start + t > self.now:
            self.now = self.start + t


def feed(app: App, clock: ReplayClock, rec: dict[str, Any]) -> dict[str, Any] | None:
    """One traffic line: a spec is pinned (None); a request is decided at its `t` (its log record)."""
    if isinstance(rec.get("spec"), dict):
        spec = rec["spec"]
        app.specs.pin(str(spec.get("server", "")), spec)
        return None
    clock.at(rec.get("t"))
    app.check(_request(rec))
    return app.decisions.recent[-1]


def replay_app(policy_path: str, clock: ReplayClock) -> App:
    return App(policy_path, decision_out=io.BytesIO(), clock=clock)


def replay_main(policy_path: str, traffic_path: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        load_policy(policy_path)
    except PolicyError as e:
        print(f"policy {policy_path} refused:\n{e}", file=sys.stderr)
        return 1
    clock = ReplayClock(time.time())
    app = replay_app(policy_path, clock)
    try:
        f = open(traffic_path, "rb")  # noqa: SIM115 (the `with f:` below closes it; only open's error is reported here)
    except OSError as e:
        print(f"cannot read {traffic_path}: {e}", file=sys.stderr)
        return 1
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except (orjson.JSONDecodeError, ValueError) as e:
                print(orjson.dumps({"line": n, "error": f"unreadable traffic line: {e}"}).decode(), file=out)
                continue
            decided = feed(app, clock, rec)
            if decided is not None:
                print(orjson.dumps({"line": n, **decided}).decode(), file=out)
    print(orjson.dumps({"summary": summary(app)}).decode(), file=out)
    return 0


def summary(app: App) -> dict[str, Any]:
    sessions = [{"sessionId": s.session_id, "caller": s.caller, "server": s.server, "userSession": s.user_session,
                 "protocolVersion": s.protocol_version, "requests": s.requests}
                for s in app.sessions.snapshot(limit=10_000)]
    callers = [app.risk.summary(st) for st in app.risk.callers(limit=10_000)]
    actors = [build(gather(app, st.caller)).as_json(timeline=False) for st in app.risk.callers(limit=10_000)]
    return {"sessions": sessions, "callers": callers,
            "alerts": [a for c in callers for a in c["alerts"]], "actors": actors}
