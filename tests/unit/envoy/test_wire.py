"""The hand-written CheckResponse encoder and the generated classes say exactly the same thing."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from extauthz.app import App
from extauthz.envoy import wire
from extauthz.envoy.convert import to_check_response
from extauthz.envoy.wire import encode_check_response

from ..core.conftest import ADMIN, SUPPORT, call, http, learn
from ..core.test_decide_table import CASES

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"


@pytest.fixture(scope="module")
def apps():
    enforce = App(str(POLICY), decision_out=io.BytesIO())
    learn(enforce)
    return enforce


@pytest.mark.parametrize("kwargs", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_encoder_matches_generated_classes_for_every_decision_shape(apps, kwargs):
    d = apps.check(http(**kwargs))
    ours = external_auth_pb2.CheckResponse.FromString(encode_check_response(d))
    assert ours == to_check_response(d)


@pytest.mark.parametrize("body,claims", [
    (call("lookup_customer", {"customer_id": "c-100"}), SUPPORT),
    (call("export_customers", {}), ADMIN),
    ([call("lookup_customer", {"customer_id": "c-100"}, mid=1), {"jsonrpc": "2.0", "id": "é", "method": "tools/list"}],
     SUPPORT),
    (call("lookup_customer", {"customer_id": "c-100"}, mid="x" * 300), SUPPORT),
])
def test_encoder_matches_in_monitor_mode_and_for_long_or_unicode_values(tmp_path, body, claims):
    p = tmp_path / "p.yaml"
    p.write_text(POLICY.read_text().replace("mode: enforce", "mode: monitor"))
    app = App(str(p), decision_out=io.BytesIO())
    learn(app)
    for b in (body, call("export_customers", {})):
        d = app.check(http(b, claims=claims))
        assert external_auth_pb2.CheckResponse.FromString(encode_check_response(d)) == to_check_response(d)
        assert orjson.loads(orjson.dumps(b))  # the body itself was valid JSON


@pytest.mark.parametrize("kwargs", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_repeated_answers_from_the_template_match_too(apps, kwargs):
    """The second and later allowed answers of one shape are spliced from a template around the
    decision id: each must still be exactly what the generated classes encode, with its own id."""
    ids = set()
    for _ in range(3):
        d = apps.check(http(**kwargs))
        ours = external_auth_pb2.CheckResponse.FromString(encode_check_response(d))
        assert ours == to_check_response(d)
        ids.add(ours.dynamic_metadata.fields["mcp_extauthz"].struct_value.fields["decision_id"].string_value)
    assert len(ids) == 3
    if d.wire_allowed and not d.plan.entries and not d.plan.stream and not d.plan.end_session:     # this shape used a template
        c = d.caller
        assert wire._templates[(d.server, d.method, d.name, c.key if c else None, d.reason, d.monitor)]


@pytest.mark.parametrize("req", [
    http({"jsonrpc": "2.0", "id": "r-" + "x" * 200, "method": "tools/list"}),                 # a digested id
    http(method="GET", headers={"mcp-session-id": "s-resume", "last-event-id": "3"}),          # a view alone
    http(method="GET"),                                                                        # 2024-11-05 stream
], ids=["long-id-list", "resumed-stream", "legacy-stream"])
def test_encoder_matches_for_the_learn_header_shapes(req):
    app = App(str(POLICY), decision_out=io.BytesIO())   # its own: the shared one's caller may be risk-blocked
    learn(app)
    for _ in range(2):                                  # the second answer must not come from a template
        d = app.check(req)
        assert d.allowed and d.plan.view is not None
        assert external_auth_pb2.CheckResponse.FromString(encode_check_response(d)) == to_check_response(d)
