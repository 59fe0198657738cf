"""Admin HTTP (port 9192): health, readiness, metrics and read-only views of the live state.

Write endpoints exist only when `admin.token` is set in the policy, and then need it as a bearer token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from extauthz import __version__
from extauthz.admin import actor_page
from extauthz.admin.actor_view import Filters, build
from extauthz.admin.actors import ActorSource, Hit, LocalActors
from extauthz.admin.actors_shared import SharedActors
from extauthz.admin.page import HEADERS as PAGE_HEADERS
from extauthz.admin.page import render as render_page
from extauthz.app import App
from extauthz.inventory.view import build_view
from extauthz.mcp.kinds import spec_kind

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send


def inventory(app: App) -> dict[str, Any]:
    """The inventory document (`extauthz.inventory.view`): servers, capabilities, coverage,
    sensitivity, usage, quarantine, drift, callers."""
    return build_view(app.inventory, app.specs, app.ctx.policy if app.ctx else None, app.holder.path, app.assessor)


async def resolve(actors: ActorSource, query: str) -> tuple[str, list[Hit]]:
    """The one caller a query names ("" if none or several) and every hit."""
    hits = await actors.find(query)
    exact = [x for x in hits if x.via == "caller"]
    if exact:
        return exact[0].caller, hits
    return (hits[0].caller if len(hits) == 1 else ""), hits


def build_admin(app: App, actors: ActorSource | None = None) -> Starlette:
    """`actors`: where the actor view reads (this process, or every worker of the supervisor)."""
    source: ActorSource = actors if actors is not None else LocalActors(app)

    async def healthz(_: Request) -> Response:
        # Alive whatever Redis does (decisions go on from local state); what is degraded is said.
        body: dict[str, object] = {"status": "ok", "version": __version__}
        if app.shared is not None and hasattr(app.shared, "status"):
            st = app.shared.status()
            body["sharedState"] = st
            if isinstance(source, SharedActors):     # the actor log's queue, writes and drops
                body["actorLog"] = source.log.status()
            if not st.get("connected"):
                body["status"], body["degraded"] = "degraded", ["shared state unreachable: new sessions follow "
                                                              "sessions.sharedStateDown"]
        return JSONResponse(body)

    async def readyz(_: Request) -> Response:
        if app.ready:
            return JSONResponse({"ready": True, "policy": app.ctx.policy.digest[:12] if app.ctx else ""})
        return JSONResponse({"ready": False}, status_code=503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def inventory_view(_: Request) -> Response:
        return JSONResponse(inventory(app))

    async def inventory_page(request: Request) -> Response:
        try:
            refresh = int(request.query_params.get("refresh", "0"))
        except ValueError:
            refresh = 0
        view = inventory(app)
        view["risk"] = [app.risk.summary(st) for st in app.risk.callers(limit=1000)
                        if st.alerts or app.risk.score(st.caller) > 0]
        body = render_page(view, refresh=max(5, min(3600, refresh)) if refresh else None)
        return HTMLResponse(body, headers=PAGE_HEADERS)

    async def ui(_: Request) -> Response:
        return RedirectResponse("/inventory", status_code=302)

    async def sessions(_: Request) -> Response:
        """MCP sessions (bound to their caller) and, per caller, the sessions it used, its risk
        score, whether it is blocked, and its alerts: one actor across sessions."""
        return JSONResponse({"active": len(app.sessions), "sessions": [
            {"sessionId": s.session_id, "caller": s.caller, "server": s.server, "userSession": s.user_session,
             "clientId": s.client_id, "protocolVersion": s.protocol_version, "requests": s.requests,
             "risk": round(app.risk.score(s.caller), 2)}
            for s in app.sessions.snapshot()],
            "callers": [app.risk.summary(st) for st in app.risk.callers(limit=1000)]})

    async def timeline(request: Request) -> Response:
        """A caller's timeline across all its MCP sessions: by key (iss|sub|client id), or every
        caller with that subject."""
        ident = request.path_params["caller"]
        found = app.risk.find(ident)
        body: dict[str, Any] = {"caller": ident, "callers": [app.risk.timeline(st) for st in found],
                                "events": [e for st in found for e in app.risk.timeline(st)["timeline"]]}
        if isinstance(source, SharedActors):     # --redis: and what the other replicas decided
            names = list(dict.fromkeys([st.caller for st in found] + await source.callers_named(ident)))
            body["events"], body["partial"] = await source.timeline_events(names, body["events"])
        if not found and not body["events"]:
            return JSONResponse({"error": f"no timeline for caller {ident!r}"}, status_code=404)
        return JSONResponse(body)

    async def actor_view(request: Request, query: str) -> tuple[Any, list[Hit], Response | None]:
        try:
            filters = Filters.from_query(request.query_params)
        except ValueError as e:
            return None, [], JSONResponse({"error": str(e)}, status_code=400)
        caller, hits = await resolve(source, query)
        if not caller:
            return None, hits, None
        hit = next((x for x in hits if x.caller == caller), None)
        if hit is not None and hit.decision_id and not filters.decision:
            filters = dataclasses.replace(filters, decision=hit.decision_id)
        facts = await source.facts(caller)
        # Building and rendering read only these facts: off the event loop, so a long timeline
        # does not hold up Checks (in one process they share this loop).
        return await asyncio.to_thread(build, facts, filters), hits, None

    async def caller_page(request: Request) -> Response:
        query = request.path_params.get("caller") or request.query_params.get("q", "")
        view, hits, bad = await actor_view(request, query)
        if bad is not None:
            return HTMLResponse(actor_page.render_matches(query, []), status_code=400, headers=actor_page.HEADERS)
        if view is None:
            return HTMLResponse(actor_page.render_matches(query, hits), status_code=404 if not hits else 200,
                                headers=actor_page.HEADERS)
        if view.caller != query:      # found by subject, session, decision id...: the actor's own URL
            d = view.filters.decision
            url = actor_page.caller_url(view.caller, **view.filters.query(), decision=d) + (f"#d-{d}" if d else "")
            return RedirectResponse(url, status_code=303)
        return HTMLResponse(await asyncio.to_thread(actor_page.render, view), headers=actor_page.HEADERS)

    async def caller_json(request: Request) -> Response:
        query = request.path_params["caller"]
        view, hits, bad = await actor_view(request, query)
        if bad is not None:
            return bad
        if view is None:
            return JSONResponse({"error": f"no single actor for {query!r}", "matches": [x.as_json() for x in hits]},
                                status_code=404 if not hits else 409)
        return JSONResponse(await asyncio.to_thread(view.as_json))

    async def investigate(request: Request) -> Response:
        query = request.query_params.get("q", "")
        view, hits, bad = await actor_view(request, query)
        if bad is not None:
            return bad
        return JSONResponse({"query": query, "matches": [x.as_json() for x in hits],
                             "actor": await asyncio.to_thread(view.as_json) if view is not None else None},
                            status_code=200 if hits else 404)

    async def decisions(request: Request) -> Response:
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=400)
        return JSONResponse({"decisions": app.decisions.recent.last(limit)})

    async def approve(request: Request) -> Response:
        token = app.ctx.policy.admin_token if app.ctx else None
        if not token:
            return JSONResponse({"error": "admin API is read-only (no admin.token in the policy)"}, status_code=403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "bad admin token"}, status_code=401)
        try:
            body = await request.json()
            server, kind, name = str(body["server"]), spec_kind(str(body["kind"])), str(body["name"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body must be {server, kind, name}"}, status_code=400)
        ok = app.specs.approve(server, kind, name)
        if ok:
            app.inventory.record_approval(server, kind, name)
        return JSONResponse({"approved": ok}, status_code=200 if ok else 404)

    return Starlette(middleware=[Middleware(_RecordFirst, app)], routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        Route("/v1/inventory", inventory_view), Route("/v1/sessions", sessions),
        Route("/inventory", inventory_page), Route("/ui", ui), Route("/", ui),
        Route("/v1/callers/{caller:path}/timeline", timeline), Route("/v1/decisions", decisions),
        Route("/v1/callers/{caller:path}", caller_json), Route("/v1/investigate", investigate),
        Route("/callers", caller_page), Route("/callers/{caller:path}", caller_page),
        Route("/v1/approve", approve, methods=["POST"]),
    ])


class _RecordFirst:
    """Every admin request sees every Check answered so far: Checks are recorded (metrics,
    inventory, decision log) in batches just after they are answered (App.record_pending)."""

    def __init__(self, asgi: ASGIApp, app: App) -> None:
        self.asgi, self.app = asgi, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.app.record_pending()
        await self.asgi(scope, receive, send)


def admin_server(app: App, host: str, port: int, actors: ActorSource | None = None) -> uvicorn.Server:
    """The admin HTTP server (uvicorn), as a task of the caller's loop. SIGTERM stays ours: uvicorn
    would take it and close the admin port at once, while the drain needs /readyz to say 503 to
    the mesh until the gRPC server stops."""
    import contextlib

    import uvicorn
    server = uvicorn.Server(uvicorn.Config(build_admin(app, actors), host=host, port=port,
                                           log_level="warning", access_log=False, lifespan="off"))
    hooks: Any = server                                  # Any: the signal hooks differ by uvicorn version
    hooks.capture_signals = contextlib.nullcontext       # uvicorn >= 0.29
    hooks.install_signal_handlers = lambda: None         # older uvicorn
    return server
