"""The compiled policy: routing to servers, rule lookup, Allow forms, Constraint exactness."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.policy.load import parse_policy_text
from extauthz.policy.model import Allow, Constraint, Policy, compile_policy
from extauthz.policy.rules import pointer_tokens
from tests.unit.policy.policy_helpers import caller, policy_yaml

_ABSENT = object()


def build(body: str) -> Policy:
    return compile_policy(parse_policy_text(policy_yaml(body), "p.yaml", "/"), "/", "p.yaml")


ROUTING = build("""
    servers:
      - name: root
        match: {authority: api.example.com}
      - name: crm
        match: {authority: ["crm.example.com", "[::1]", "127.0.0.1:8443"], pathPrefix: /mcp}
      - name: crm-v2
        match: {authority: crm.example.com, pathPrefix: /mcp/v2/}
      - name: crm-tls
        match: {authority: "crm.example.com:443", pathPrefix: /mcp}
      - name: v6
        match: {authority: "[2001:DB8::1]:8080"}
""")

ROUTES = [
    ("crm.example.com", "/mcp", "crm"),
    ("CRM.Example.COM:8080", "/mcp/x", "crm"),
    ("crm.example.com.", "/mcp", "crm"),
    ("crm.example.com", "/mcp?session=1", "crm"),
    ("crm.example.com", "/mcp/?x", "crm"),
    ("crm.example.com", "/mcp#frag", "crm"),
    ("crm.example.com", "/mcpx", None),
    ("crm.example.com", "/mcpx?/mcp", None),
    ("crm.example.com", "/mc", None),
    ("crm.example.com", "/", None),
    ("crm.example.com", "/MCP", None),
    ("crm.example.com", "/mcp/v2", "crm-v2"),
    ("crm.example.com", "/mcp/v2/tools", "crm-v2"),
    ("crm.example.com", "/mcp/v2x", "crm"),
    ("crm.example.com:443", "/mcp", "crm-tls"),
    ("crm.example.com:443", "/mcp/v2", "crm-v2"),
    ("[::1]:9000", "/mcp", "crm"),
    ("[::1]", "/mcp", "crm"),
    ("[0:0::0:1]:1", "/mcp", "crm"),
    ("::1", "/mcp", "crm"),
    ("[::1]:9000", "/other", None),
    ("127.0.0.1:8443", "/mcp", "crm"),
    ("127.0.0.1:8444", "/mcp", None),
    ("127.0.0.1", "/mcp", None),
    ("[2001:db8::1]:8080", "/anything", "v6"),
    ("[2001:db8:0::1]:8080", "/", "v6"),
    ("[2001:db8::1]:8081", "/", None),
    ("[2001:db8::1]", "/", None),
    ("api.example.com", "/anything/at/all", "root"),
    ("api.example.com:1234", "/", "root"),
    ("api.example.com", "", None),
    ("api.example.com", "*", None),
    ("other.example.com", "/mcp", None),
    ("", "/mcp", None),
    ("crm.example.com:abc", "/mcp", None),
    ("crm.example.com:0", "/mcp", None),
    ("[::1", "/mcp", None),
    ("crm.example.com /mcp", "/mcp", None),
    ("crm..example.com", "/mcp", None),
]


@pytest.mark.parametrize("authority,path,expected", ROUTES,
                         ids=[f"{a or 'empty'}{p or '(none)'}" for a, p, _ in ROUTES])
def test_server_for(authority: str, path: str, expected: str | None) -> None:
    server = ROUTING.server_for(authority, path)
    assert (server.name if server else None) == expected


def test_matches_returns_prefix_length() -> None:
    crm, root = ROUTING.server_by_name("crm"), ROUTING.server_by_name("root")
    assert crm is not None and root is not None
    assert crm.matches("crm.example.com:80", "/mcp/x") == 4
    assert crm.matches("crm.example.com", "/mcpx") == -1
    assert crm.matches("elsewhere", "/mcp") == -1
    assert root.matches("api.example.com", "/x") == 1
    assert ROUTING.server_by_name("crm-v2").path_prefix == "/mcp/v2"
    assert ROUTING.server_by_name("nope") is None


RULES_YAML = """
    defaults: {schemaStrictness: as-published}
    servers:
      - name: crm
        match: {authority: a}
        schemaStrictness: strict
        tools:
          - {name: "export_*", allow: {groups: [exporters]}, schemaStrictness: as-published}
          - {name: "*", allow: {groups: [everyone]}}
          - {name: export_csv, allow: {groups: [csv]}}
        resources:
          - {uri: "crm://r/**", allow: {groups: [deep]}}
          - {uri: "crm://r/x", allow: {groups: [exact]}}
        prompts:
          - {name: "p*", allow: {authenticated: true}}
      - name: plain
        match: {authority: b}
"""
RULES = build(RULES_YAML)

LOOKUPS = [
    ("tool", "export_csv", "crm.tools[2]"),      # exact beats earlier globs
    ("tool", "export_pdf", "crm.tools[0]"),      # first glob in file order
    ("tool", "search", "crm.tools[1]"),
    ("tool", "a/b", None),                       # `*` never crosses '/'
    ("resource", "crm://r/x", "crm.resources[1]"),
    ("resource", "crm://r/x/y", "crm.resources[0]"),
    ("resource", "crm://q", None),
    ("prompt", "plan", "crm.prompts[0]"),
    ("prompt", "export_csv", None),              # kinds never mix
]


@pytest.mark.parametrize("kind,name,rule_id", LOOKUPS, ids=[f"{k}:{n}" for k, n, _ in LOOKUPS])
def test_rule_precedence(kind: Any, name: str, rule_id: str | None) -> None:
    rule = RULES.server_by_name("crm").rule_for(kind, name)
    assert (rule.rule_id if rule else None) == rule_id
    if rule:
        assert rule.kind == kind


def test_rule_lookups_are_remembered_within_a_bound_and_stay_right_beyond_it() -> None:
    """rule_for remembers each name's answer (misses too), but only RESOLVED_MAX names: a client
    inventing names cannot grow it, and past the bound every answer is still the right one."""
    from extauthz.policy import model

    crm = build(RULES_YAML).server_by_name("crm")
    expected = {(k, n): RULES.server_by_name("crm").rule_for(k, n) for k, n, _ in LOOKUPS}
    for i in range(model.RESOLVED_MAX + 50):
        crm.rule_for("tool", f"invented_{i}")
    assert len(crm._resolved) == model.RESOLVED_MAX
    for _ in range(2):                       # after the bound, and asked twice
        for (kind, name), rule in expected.items():
            got = crm.rule_for(kind, name)
            assert (got.rule_id if got else None) == (rule.rule_id if rule else None), (kind, name)
    assert len(crm._resolved) == model.RESOLVED_MAX


def test_strictness_chain() -> None:
    crm, plain = RULES.server_by_name("crm"), RULES.server_by_name("plain")
    assert RULES.strictness_for(crm, "export_pdf") == "as-published"   # tool rule
    assert RULES.strictness_for(crm, "export_csv") == "strict"         # server (exact rule has none)
    assert RULES.strictness_for(crm, "unlisted/name") == "strict"      # server
    assert RULES.strictness_for(plain, "x") == "as-published"          # defaults
    assert RULES.strictness_for(None, "x") == "as-published"


def test_monitor_mode_and_misc() -> None:
    assert build("mode: monitor\n").monitor is True
    policy = build("identity:\n  sources: [{header: {name: X-JWT-Payload}}, {mtls: {}}]\nadmin: {token: s3cret}\n")
    assert [(s.kind, s.name, s.encoding) for s in policy.identity.sources] == [
        ("header", "x-jwt-payload", "base64url-json"), ("mtls", None, None)]
    assert policy.admin_token == "s3cret" and policy.servers == ()


ALLOWS = [
    # (allow document, caller or None, permitted)
    ({"groups": ["support", "admin"]}, caller(("admin",)), True),
    ({"groups": ["support", "admin"]}, caller(("sales",)), False),
    ({"groups": ["support"]}, caller(()), False),
    ({"groups": ["support"]}, None, False),
    ({"authenticated": True}, caller(()), True),
    ({"authenticated": True}, None, False),
    ({"subjects": ["alice"]}, caller(subject="alice"), True),
    ({"subjects": ["alice"]}, caller(subject="Alice"), False),
    ({"clients": ["agent"]}, caller(client_id="agent"), True),
    ({"clients": ["agent"]}, caller(client_id="other"), False),
    ({"groups": ["admin"], "clients": ["agent"]}, caller(("admin",), client_id="agent"), True),
    ({"groups": ["admin"], "clients": ["agent"]}, caller(("admin",), client_id="other"), False),
    ({"groups": ["admin"], "clients": ["agent"]}, caller(("x",), client_id="agent"), False),
    ({"groups": ["g"], "subjects": ["alice"], "clients": ["agent"], "authenticated": True},
     caller(("g",)), True),
    ({"groups": ["g"], "subjects": ["bob"], "clients": ["agent"]}, caller(("g",)), False),
]


@pytest.mark.parametrize("doc,who,expected", ALLOWS, ids=[
    f"{'+'.join(sorted(d))}-{'none' if w is None else w.subject + '/' + w.client_id + '/' + ','.join(sorted(w.groups))}-{e}"
    for d, w, e in ALLOWS])
def test_allow_forms(doc: dict, who, expected: bool) -> None:
    assert Allow.from_doc(doc).permits(who) is expected


CONSTRAINTS = [
    # (id, constraint document, arguments, claim value (or _ABSENT), expected)
    ("str-in-list", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, ["42", "7"], True),
    ("str-not-in-list", {"argument": "/id", "inClaim": "c"}, {"id": "43"}, ["42", "7"], False),
    ("str-vs-int-claim", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, [42], False),
    ("int-vs-str-claim", {"argument": "/id", "inClaim": "c"}, {"id": 42}, ["42"], False),
    ("int-in-list", {"argument": "/id", "inClaim": "c"}, {"id": 42}, [41, 42], True),
    ("int-vs-float", {"argument": "/id", "inClaim": "c"}, {"id": 1}, [1.0], True),
    ("float-fraction", {"argument": "/id", "inClaim": "c"}, {"id": 1.5}, [1], False),
    ("true-vs-1", {"argument": "/id", "inClaim": "c"}, {"id": True}, [1], False),
    ("1-vs-true", {"argument": "/id", "inClaim": "c"}, {"id": 1}, [True], False),
    ("0-vs-false", {"argument": "/id", "inClaim": "c"}, {"id": 0}, [False], False),
    ("true-vs-true", {"argument": "/id", "inClaim": "c"}, {"id": True}, [True], True),
    ("null-never", {"argument": "/id", "inClaim": "c"}, {"id": None}, [None], False),
    ("list-arg-never", {"argument": "/id", "inClaim": "c"}, {"id": ["42"]}, ["42"], False),
    ("object-arg-never", {"argument": "/id", "inClaim": "c"}, {"id": {"a": 1}}, [{"a": 1}], False),
    ("scalar-claim", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, "42", True),
    ("scalar-claim-other-type", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, 42, False),
    ("claim-absent", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, _ABSENT, False),
    ("claim-object", {"argument": "/id", "inClaim": "c"}, {"id": "42"}, {"42": True}, False),
    ("arg-absent", {"argument": "/id", "inClaim": "c"}, {}, ["42"], False),
    ("arg-absent-optional", {"argument": "/id", "inClaim": "c", "optional": True}, {}, ["42"], True),
    ("arg-present-optional-wrong", {"argument": "/id", "inClaim": "c", "optional": True},
     {"id": "9"}, ["42"], False),
    ("arg-null-optional", {"argument": "/id", "inClaim": "c", "optional": True}, {"id": None}, ["42"], False),
    ("arguments-not-object", {"argument": "/id", "inClaim": "c", "optional": True}, "x", ["42"], True),
    ("arguments-none", {"argument": "/id", "inClaim": "c"}, None, ["42"], False),
    ("nested", {"argument": "/filter/customer/id", "inClaim": "c"},
     {"filter": {"customer": {"id": "42"}}}, ["42"], True),
    ("escaped", {"argument": "/a~1b/~0c", "inClaim": "c"}, {"a/b": {"~c": "42"}}, ["42"], True),
    ("escape-order", {"argument": "/~01", "inClaim": "c"}, {"~1": "42", "/": "x"}, ["42"], True),
    ("array-index", {"argument": "/ids/1", "inClaim": "c"}, {"ids": ["7", "42"]}, ["42"], True),
    ("array-leading-zero", {"argument": "/ids/01", "inClaim": "c"}, {"ids": ["7", "42"]}, ["42"], False),
    ("array-dash", {"argument": "/ids/-", "inClaim": "c"}, {"ids": ["42"]}, ["42"], False),
    ("array-out-of-range", {"argument": "/ids/5", "inClaim": "c"}, {"ids": ["42"]}, ["42"], False),
    ("array-negative", {"argument": "/ids/-1", "inClaim": "c"}, {"ids": ["42"]}, ["42"], False),
    ("empty-key", {"argument": "/", "inClaim": "c"}, {"": "42"}, ["42"], True),
    ("whole-arguments", {"argument": "", "inClaim": "c"}, {"id": "42"}, ["42"], False),
    ("equals-str", {"argument": "/t", "equalsClaim": "c"}, {"t": "t1"}, "t1", True),
    ("equals-other", {"argument": "/t", "equalsClaim": "c"}, {"t": "t2"}, "t1", False),
    ("equals-list-claim", {"argument": "/t", "equalsClaim": "c"}, {"t": "t1"}, ["t1"], False),
    ("equals-str-vs-int", {"argument": "/t", "equalsClaim": "c"}, {"t": "7"}, 7, False),
    ("equals-int-vs-float", {"argument": "/t", "equalsClaim": "c"}, {"t": 7}, 7.0, True),
    ("equals-bool-vs-int", {"argument": "/t", "equalsClaim": "c"}, {"t": False}, 0, False),
]


@pytest.mark.parametrize("doc,arguments,claim,expected", [c[1:] for c in CONSTRAINTS],
                         ids=[c[0] for c in CONSTRAINTS])
def test_constraint_exactness(doc: dict, arguments: Any, claim: Any, expected: bool) -> None:
    claims = {} if claim is _ABSENT else {"c": claim}
    assert Constraint.from_doc(doc).check(arguments, caller(**claims)) is expected


def test_constraint_without_caller_fails() -> None:
    constraint = Constraint.from_doc({"argument": "/id", "inClaim": "c", "optional": True})
    assert constraint.check({}, None) is False


@pytest.mark.parametrize("pointer,tokens", [
    ("", ()), ("/", ("",)), ("/a/b", ("a", "b")), ("/a~1b", ("a/b",)), ("/m~0n", ("m~n",)),
    ("/~01", ("~1",)), ("/a//b", ("a", "", "b")),
])
def test_pointer_tokens(pointer: str, tokens: tuple[str, ...]) -> None:
    assert pointer_tokens(pointer) == tokens


@pytest.mark.parametrize("pointer", ["a", "/a~", "/a~2", "#/a"])
def test_pointer_tokens_reject(pointer: str) -> None:
    with pytest.raises(ValueError):
        pointer_tokens(pointer)


def test_policy_objects_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ROUTING.mode = "monitor"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ROUTING.server_by_name("crm")._exact[("tool", "x")] = None  # type: ignore[index]
