"""`extauthz suggest-policy`: a policy written from observed use, checked by the real loader and
the real decision core (App.check): it allows exactly the (group, capability) pairs seen allowed."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
import yaml

from extauthz.admin.http import inventory
from extauthz.app import App
from extauthz.policy.check import check_policy_main
from extauthz.policy.model import load_policy
from extauthz.policy.suggest import comment, suggest_policy, yq
from extauthz.policy.yamldoc import load_yaml_with_positions

from ..core.conftest import PROMPTS, RESOURCES, TEMPLATES, TOOLS, call, http

BROAD = """apiVersion: mcp-extauthz/v1
kind: Policy
mode: enforce
defaults: {unknownServer: deny, unknownCapability: deny, unauthenticated: deny, onDrift: quarantine}
identity:
  sources:
    - jwtMetadata: {filter: envoy.filters.http.jwt_authn, key: jwt_payload}
servers:
  - name: crm
    match: {authority: [crm.example.com, "crm.internal:8443"], pathPrefix: /mcp}
    upstream: http://crm:8000/mcp
    tools:
      - name: lookup_customer
        allow: {groups: [support, admin, qa]}
        constraints:
          - {argument: /customer_id, inClaim: customer_ids}
      - name: open_tool
        allow: {authenticated: true}
        schemaStrictness: as-published
      - name: "**"
        allow: {authenticated: true}
    resources:
      - {uri: "crm://**", allow: {authenticated: true}}
    prompts:
      - {name: "*", allow: {authenticated: true}}
limits: {maxBodyBytes: 4096, maxDepth: 8, maxStringBytes: 512, maxArrayItems: 20}
audit: {logArguments: false}
admin: {token: do-not-copy}
"""
GROUPS = ("support", "admin", "qa", "other")


def claims(sub: str, *groups: str) -> dict:
    return {"iss": "https://issuer", "sub": sub, "groups": list(groups), "customer_ids": ["c-100"], "client_id": "agent"}


def read(uri: str) -> dict:
    return {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}}


def prompt(name: str) -> dict:
    return {"jsonrpc": "2.0", "id": 4, "method": "prompts/get",
            "params": {"name": name, "arguments": {"customer_id": "c-100"}}}


ARGS = {"lookup_customer": {"customer_id": "c-100"}, "search_customers": {"query": "a"}, "get_order": {},
        "open_tool": {"a": "x"}, "export_customers": {}, "routed": {}}
CAPABILITIES = {**{f"tool:{n}": call(n, a) for n, a in ARGS.items()},
                "resource:crm://customers/c-100": read("crm://customers/c-100"),
                "resource:crm://reports/summary": read("crm://reports/summary"),
                "prompt:draft_reply": prompt("draft_reply")}


def app_with(path: Path, tools: list = TOOLS) -> App:
    app = App(str(path), decision_out=io.BytesIO())
    app.specs.apply_page("crm", "tools", tools, first=True, last=True)
    app.specs.apply_page("crm", "resources", RESOURCES, first=True, last=True)
    app.specs.apply_page("crm", "resourceTemplates", TEMPLATES, first=True, last=True)
    app.specs.apply_page("crm", "prompts", PROMPTS, first=True, last=True)
    return app


def suggest(app: App, tmp_path: Path) -> tuple[str, Path]:
    text = suggest_policy(inventory(app), source="unit test")
    out = tmp_path / "suggested.yaml"
    out.write_text(text)
    return text, out


def test_suggested_policy_allows_exactly_the_observed_pairs(tmp_path, capsys):
    running = tmp_path / "running.yaml"
    running.write_text(BROAD)
    app = app_with(running)
    observed = {("support", "tool:lookup_customer"), ("support", "tool:search_customers"),
                ("support", "resource:crm://customers/c-100"), ("support", "prompt:draft_reply"),
                ("admin", "tool:export_customers"), ("admin", "tool:lookup_customer"), ("qa", "tool:routed")}
    for group, cap in sorted(observed):
        assert app.check(http(CAPABILITIES[cap], claims=claims(f"user-{group}", group))).allowed, (group, cap)
    # A group-less service account: allowed by subject.
    assert app.check(http(CAPABILITIES["tool:open_tool"], claims=claims("svc"))).allowed
    # Denied attempts never become rules.
    assert not app.check(http(call("lookup_customer", {"customer_id": "c-999"}), claims=claims("mallory", "qa"))).allowed
    assert not app.check(http(call("not_published", {}), claims=claims("mallory", "qa"))).allowed

    text, out = suggest(app, tmp_path)
    assert check_policy_main(str(out)) == 0, capsys.readouterr().out
    assert "do-not-copy" not in text and "admin.token is not copied" in text
    suggested = app_with(out)
    for group, cap in itertools.product(GROUPS, CAPABILITIES):
        got = suggested.check(http(CAPABILITIES[cap], claims=claims(f"user-{group}", group)))
        assert got.allowed == ((group, cap) in observed), (group, cap, got.reason, got.detail)
    assert suggested.check(http(CAPABILITIES["tool:open_tool"], claims=claims("svc"))).allowed
    assert not suggested.check(http(CAPABILITIES["tool:open_tool"], claims=claims("svc2"))).allowed
    # Kept from the running rule: the constraint (c-999 is not in the caller's claim) and strictness.
    assert suggested.check(http(call("lookup_customer", {"customer_id": "c-999"}),
                                claims=claims("s", "support"))).reason.value == "constraint_violated"
    policy = load_policy(str(out))
    crm = policy.server_by_name("crm")
    assert crm is not None and crm.upstream == "http://crm:8000/mcp"
    assert crm.authorities == (("crm.example.com", None), ("crm.internal", 8443)) and crm.path_prefix == "/mcp"
    assert crm.rule_for("tool", "open_tool").schema_strictness == "as-published"
    assert policy.limits.max_body_bytes == 4096 and policy.mode == "enforce"
    # Exact names only: the running globs are not copied.
    assert crm.rule_for("tool", "update_settings") is None and crm.rule_for("tool", "get_order") is None
    assert "# published, no allowed use seen (denied under this policy): get_order" in text


def test_a_caller_in_several_groups_counts_for_each_and_says_so(tmp_path):
    running = tmp_path / "running.yaml"
    running.write_text(BROAD)
    app = app_with(running)
    app.check(http(call("search_customers", {"query": "a"}), claims=claims("carol", "support", "qa")))
    # The rule that allowed lookup_customer names support/admin/qa: only those groups justify it.
    app.check(http(call("lookup_customer", {"customer_id": "c-100"}), claims=claims("dave", "qa", "interns")))
    text, out = suggest(app, tmp_path)
    policy = load_policy(str(out)).server_by_name("crm")
    assert policy.rule_for("tool", "search_customers").allow.groups == frozenset({"support", "qa"})
    assert policy.rule_for("tool", "lookup_customer").allow.groups == frozenset({"qa"})
    assert "each counts; narrow by hand" in text


def test_hostile_names_are_quoted_or_left_out(tmp_path):
    running = tmp_path / "running.yaml"
    running.write_text(BROAD)
    names = ['q"uote: #x\' - {a: b}', "wild*card", "\u00fcn\u00efcode", "colon: value", "&anchor", "back\\slash"]
    tools = [{"name": n, "inputSchema": {"type": "object"}} for n in names]
    app = app_with(running, tools)
    for n in names:
        assert app.check(http(call(n, {}), claims=claims("alice", "support"))).allowed, n
    text, out = suggest(app, tmp_path)
    assert check_policy_main(str(out)) == 0
    suggested = app_with(out, tools)
    for n in names:
        expect = n != "wild*card"             # a '*' would make a glob: not written, commented
        assert suggested.check(http(call(n, {}), claims=claims("alice", "support"))).allowed == expect, n
        assert not suggested.check(http(call(n, {}), claims=claims("eve", "qa"))).allowed, n
    assert "# not written: wild*card: contains '*' (would be a glob)" in text
    # Comments never carry a raw line break from a name.
    assert all(line.lstrip().startswith(("#", "-", "allow", "constraints", "schemaStrictness", "sensitive", "name",
                                          "match", "upstream", "tools", "resources", "prompts", "apiVersion", "kind",
                                          "mode", "defaults", "identity", "limits", "sessions", "risk", "audit",
                                          "servers")) or not line.strip()
               for line in text.splitlines()), text


TRICKY = ["plain", 'with "quotes"', "back\\slash", "new\nline", "tab\t", "\u2028sep", "\x85nel", "\ufeffbom",
          "emoji \U0001F600", "\x7fdel", "#hash", ": colon", "- dash", "*star", "&anchor", "!tag", "{flow}", "[x]",
          "", "null", "true", "1e3", "\x00nul", "\ufffe", "a: b # c", "'single'"]


@pytest.mark.parametrize("s", TRICKY, ids=range(len(TRICKY)))
def test_yaml_scalars_read_back_exactly(s):
    assert yaml.safe_load(yq(s)) == s
    data, _ = load_yaml_with_positions(f"k: {yq(s)}\n")
    assert data == {"k": s}


def test_comment_text_stays_on_one_printable_line():
    assert comment("a\nb\rc\u2028d\x1b[2J") == "a?b?c?d?[2J"
    assert len(comment("x" * 500)) == 160
