"""Admin HTTP: health with version, readiness, metrics, views, and a write endpoint that exists
only with an admin token."""

from __future__ import annotations

import io
from pathlib import Path

from starlette.testclient import TestClient

from extauthz import __version__
from extauthz.admin.http import build_admin
from extauthz.app import App

from ..core.conftest import TOOLS, call, http, learn

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"


def _app(tmp_path: Path | None = None, token: str | None = None) -> App:
    path = POLICY
    if token and tmp_path:
        path = tmp_path / "p.yaml"
        path.write_text(POLICY.read_text() + f"admin: {{token: {token}}}\n")
    a = App(str(path), decision_out=io.BytesIO())
    learn(a)
    return a


def test_health_ready_metrics_and_views():
    app = _app()
    c = TestClient(build_admin(app))
    assert c.get("/healthz").json() == {"status": "ok", "version": __version__}
    assert c.get("/readyz").status_code == 200
    app.check(http(call("export_customers", {})))
    m = c.get("/metrics").text
    assert f'mcp_extauthz_build_info{{version="{__version__}"}} 1.0' in m
    assert 'reason="not_allowed"' in m
    inv = c.get("/v1/inventory").json()
    assert {t["name"] for t in inv["servers"][0]["tools"]} == {t["name"] for t in TOOLS}
    d = c.get("/v1/decisions?limit=1").json()["decisions"]
    assert len(d) == 1 and d[0]["reason"] == "not_allowed"
    assert c.get("/v1/decisions?limit=x").status_code == 400
    tl = c.get("/v1/callers/https://issuer|alice|agent/timeline").json()
    assert tl["events"] and tl["events"][0]["reason"] == "not_allowed"
    app.draining = True
    assert c.get("/readyz").status_code == 503


def test_write_endpoint_needs_the_admin_token(tmp_path):
    read_only = TestClient(build_admin(_app()))
    assert read_only.post("/v1/approve", json={"server": "crm", "kind": "tools", "name": "x"}).status_code == 403
    app = _app(tmp_path, token="s3cret")
    changed = [dict(t, description="changed") for t in TOOLS]
    app.specs.apply_page("crm", "tools", changed, first=True, last=True, on_drift="quarantine")
    c = TestClient(build_admin(app))
    body = {"server": "crm", "kind": "tools", "name": "lookup_customer"}
    assert c.post("/v1/approve", json=body).status_code == 401
    assert c.post("/v1/approve", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert app.check(http(call("lookup_customer", {"customer_id": "c-100"}))).reason.value == "quarantined"
    assert c.post("/v1/approve", json=body, headers={"authorization": "Bearer s3cret"}).json() == {"approved": True}
    assert app.check(http(call("lookup_customer", {"customer_id": "c-100"}))).allowed
