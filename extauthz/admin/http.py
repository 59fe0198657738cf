"""Admin HTTP (port 9192): health, readiness, metrics and read-only views of the live state.

Write endpoints exist only when `admin.token` is set in the policy, and then need it as a bearer token.
"""

from __future__ import annotations

import hmac
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from extauthz import __version__
from extauthz.app import App


def inventory(app: App) -> dict[str, Any]:
    policy = app.ctx.policy if app.ctx else None
    servers = []
    for spec in app.specs.servers():
        sp = policy.server_by_name(spec.server) if policy else None
        servers.append({
            "server": spec.server,
            "covered": sp is not None,
            "pinned": spec.pinned,
            "info": spec.info,
            "tools": [{"name": t.name, "schemaHash": t.schema_hash, "description": t.description,
                       "annotations": t.raw.get("annotations"),
                       "covered": bool(sp and sp.rule_for("tool", t.name))} for t in spec.tools.values()],
            "resources": [{"uri": r.uri, "name": r.name,
                           "covered": bool(sp and sp.rule_for("resource", r.uri))} for r in spec.resources.values()],
            "resourceTemplates": [{"uriTemplate": t.uri_template, "name": t.name} for t in spec.templates.values()],
            "prompts": [{"name": p.name, "arguments": p.arguments,
                         "covered": bool(sp and sp.rule_for("prompt", p.name))} for p in spec.prompts.values()],
            "quarantined": [{"kind": k, "name": n, "why": w} for (k, n), w in spec.quarantined.items()],
        })
    return {"servers": servers}


def build_admin(app: App) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(_: Request) -> Response:
        if app.ready:
            return JSONResponse({"ready": True, "policy": app.ctx.policy.digest[:12] if app.ctx else ""})
        return JSONResponse({"ready": False}, status_code=503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def inventory_view(_: Request) -> Response:
        return JSONResponse(inventory(app))

    async def sessions(_: Request) -> Response:
        return JSONResponse({"active": len(app.sessions), "sessions": [
            {"sessionId": s.session_id, "caller": s.caller, "server": s.server, "userSession": s.user_session,
             "clientId": s.client_id, "protocolVersion": s.protocol_version, "requests": s.requests}
            for s in app.sessions.snapshot()]})

    async def timeline(request: Request) -> Response:
        caller = request.path_params["caller"]
        events = [r for r in app.decisions.recent
                  if r.get("caller") and f"{r['caller']['iss']}|{r['caller']['sub']}|{r['caller']['client_id']}" == caller
                  or (r.get("caller") or {}).get("sub") == caller]
        return JSONResponse({"caller": caller, "events": events})

    async def decisions(request: Request) -> Response:
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=400)
        return JSONResponse({"decisions": list(app.decisions.recent)[-limit:]})

    async def approve(request: Request) -> Response:
        token = app.ctx.policy.admin_token if app.ctx else None
        if not token:
            return JSONResponse({"error": "admin API is read-only (no admin.token in the policy)"}, status_code=403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "bad admin token"}, status_code=401)
        try:
            body = await request.json()
            ok = app.specs.approve(str(body["server"]), str(body["kind"]), str(body["name"]))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body must be {server, kind, name}"}, status_code=400)
        return JSONResponse({"approved": ok}, status_code=200 if ok else 404)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        Route("/v1/inventory", inventory_view), Route("/v1/sessions", sessions),
        Route("/v1/callers/{caller:path}/timeline", timeline), Route("/v1/decisions", decisions),
        Route("/v1/approve", approve, methods=["POST"]),
    ])
