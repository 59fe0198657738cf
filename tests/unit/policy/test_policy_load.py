"""Loading: every class of mistake yields a PolicyError issue at the right line."""

from __future__ import annotations

import json
import os

import pytest
from jsonschema import Draft202012Validator

from extauthz.policy.errors import PolicyError, PolicyIssue
from extauthz.policy.load import (
    load_policy_document,
    parse_policy_bytes,
    parse_policy_text,
    policy_schema,
)
from extauthz.policy.model import default_policy, load_policy
from tests.unit.policy.policy_helpers import policy_yaml

SERVER = """
servers:
  - name: crm
    match: {authority: crm.example.com, pathPrefix: /mcp}
"""


def issues_of(text: str, base_dir: str = "/nonexistent") -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, "policy.yaml", base_dir)
    return info.value.issues


# --- the embedded default ------------------------------------------------------------------

def test_default_policy_loads_and_is_complete() -> None:
    policy = default_policy()
    assert policy.mode == "enforce" and not policy.monitor
    crm = policy.server_by_name("crm")
    assert crm is not None and crm.path_prefix == "/mcp"
    assert crm.upstream == "http://127.0.0.1:8000/mcp"
    assert [r.rule_id for r in crm.tools] == [f"crm.tools[{i}]" for i in range(4)]
    assert policy.rule_count == 7
    assert len(policy.digest) == 64
    assert [s.kind for s in policy.identity.sources] == ["jwtMetadata", "header"]
    assert policy.limits.max_body_bytes == 262144 and policy.limits.decode == frozenset()
    assert policy.defaults.deny_status == 200 and policy.defaults.schema_strictness == "strict"


def test_filled_document_is_complete_and_still_valid() -> None:
    doc = parse_policy_text(policy_yaml(SERVER), "policy.yaml", "/")
    assert doc["mode"] == "enforce"
    assert doc["defaults"] == {"unknownServer": "deny", "unknownCapability": "deny",
                               "unauthenticated": "deny", "onDrift": "quarantine",
                               "filterLists": True, "denyStatus": 200, "schemaStrictness": "strict",
                               "hiddenInstructions": "quarantine"}
    assert doc["identity"]["sources"] == [
        {"jwtMetadata": {"filter": "envoy.filters.http.jwt_authn", "key": "jwt_payload"}}]
    assert doc["identity"]["clientIdClaims"] == ["client_id", "azp"]
    assert doc["servers"][0]["tools"] == [] and doc["servers"][0]["match"]["pathPrefix"] == "/mcp"
    assert doc["limits"]["maxArrayItems"] == 10000 and doc["sessions"]["maxSessions"] > 0
    assert doc["risk"] == {"enabled": True, "blockAt": 100, "decayPerMinute": 1, "volumePerMinute": 600,
                           "timelineLength": 32, "maxCallers": 10000, "largeResponseBytes": 1048576,
                           "callsPerMinute": 0}
    assert doc["audit"] == {"logArguments": False, "observeResponses": "sampled"} and doc["admin"] == {}
    assert not list(Draft202012Validator(policy_schema()).iter_errors(doc))


def test_digest_ignores_formatting_but_not_meaning() -> None:
    a = policy_yaml(SERVER)
    b = policy_yaml("servers: [{name: crm, match: {pathPrefix: /mcp, authority: crm.example.com}}]\n"
                    "mode: enforce  # explicit default\n")
    c = policy_yaml(SERVER + "mode: monitor\n")
    from extauthz.policy.model import compile_policy
    digests = [compile_policy(parse_policy_text(t, "p.yaml", "/"), "/").digest for t in (a, b, c)]
    assert digests[0] == digests[1] != digests[2]


# --- every error class, with its line --------------------------------------------------------
# (id, policy body after the 2 header lines, expected line, path in the location, message part)
ERRORS = [
    ("wrong-type-bool", """
        defaults:
          filterLists: "yes"
     """, 4, "defaults.filterLists", "expected true or false, got a string"),
    ("wrong-type-int", """
        limits:
          maxBodyBytes: lots
     """, 4, "limits.maxBodyBytes", "expected an integer"),
    ("unknown-top-level-key", """
        mode: enforce
        polices: []
     """, 4, "polices", "unknown field 'polices'"),
    ("unknown-nested-key-points-at-key", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                alow: {groups: [b]}
     """, 9, "servers[0].tools[0].alow", "unknown field 'alow'"),
    ("missing-required", """
        servers:
          - match: {authority: a}
     """, 4, "servers[0]", "missing required field 'name'"),
    ("mode-enum", "mode: enforcing\n", 3, "mode", "must be one of"),
    ("deny-status-enum", "defaults: {denyStatus: 404}\n", 3, "defaults.denyStatus", "200, 403"),
    ("strictness-enum", "defaults: {schemaStrictness: loose}\n", 3, "defaults.schemaStrictness", "as-published"),
    ("server-name-pattern", """
        servers:
          - name: CRM
            match: {authority: a}
     """, 4, "servers[0].name", "lowercase"),
    ("identity-source-two-keys", """
        identity:
          sources:
            - jwtMetadata: {key: k}
              header: {name: x-jwt}
     """, 5, "identity.sources[0]", "exactly one key"),
    ("header-encoding", """
        identity:
          sources:
            - header: {name: x-jwt, encoding: base32}
     """, 5, "identity.sources[0].header.encoding", "base64url-json"),
    ("allow-empty", """
        servers:
          - name: crm
            match: {authority: a}
            prompts:
              - {name: p, allow: {}}
     """, 7, "servers[0].prompts[0].allow", "at least one of groups"),
    ("allow-authenticated-false-alone", """
        servers:
          - name: crm
            match: {authority: a}
            prompts:
              - name: p
                allow: {authenticated: false}
     """, 8, "servers[0].prompts[0].allow.authenticated", "never admits anonymous"),
    ("allow-groups-not-list", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow:
                  groups: admin
     """, 9, "servers[0].tools[0].allow.groups", "expected a list, got a string"),
    ("constraint-both-ops", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                constraints:
                  - {argument: /id, inClaim: ids, equalsClaim: id}
     """, 10, "servers[0].tools[0].constraints[0]", "exactly one of inClaim or equalsClaim"),
    ("constraint-no-op", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                constraints:
                  - {argument: /id}
     """, 10, "servers[0].tools[0].constraints[0]", "exactly one of inClaim or equalsClaim"),
    ("pointer-bad-tilde", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                constraints:
                  - argument: /a~2b
                    inClaim: ids
     """, 10, "servers[0].tools[0].constraints[0].argument", "'~0'"),
    ("pointer-trailing-tilde", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                constraints:
                  - {argument: "/a~", inClaim: ids}
     """, 10, "servers[0].tools[0].constraints[0].argument", "'~0'"),
    ("pointer-no-slash", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow: {groups: [a]}
                constraints:
                  - {argument: customer_id, inClaim: ids}
     """, 10, "servers[0].tools[0].constraints[0].argument", "starting with '/'"),
    ("tool-name-not-nfc", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: "cafe\\u0301"
                allow: {groups: [a]}
     """, 7, "servers[0].tools[0].name", "NFC"),
    ("resource-uri-control-char", """
        servers:
          - name: crm
            match: {authority: a}
            resources:
              - uri: "crm://x\\ty"
                allow: {groups: [a]}
     """, 7, "servers[0].resources[0].uri", "control character U+0009"),
    ("group-not-nfc", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - name: t
                allow:
                  groups: [ok, "A\\u030a"]
     """, 9, "servers[0].tools[0].allow.groups[1]", "NFC"),
    ("lone-surrogate", """
        servers:
          - name: crm
            match: {authority: a}
            prompts:
              - {name: "\\ud800", allow: {authenticated: true}}
     """, 7, "servers[0].prompts[0].name", "UTF-8"),
    ("glob-three-stars", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - {name: "export_***", allow: {groups: [a]}}
     """, 7, "servers[0].tools[0].name", "ambiguous"),
    ("duplicate-rule", """
        servers:
          - name: crm
            match: {authority: a}
            tools:
              - {name: t, allow: {groups: [a]}}
              - {name: t, allow: {groups: [b]}}
     """, 8, "servers[0].tools[1].name", "duplicate tool rule 't'"),
    ("duplicate-server-name", """
        servers:
          - name: crm
            match: {authority: a}
          - name: crm
            match: {authority: b}
     """, 6, "servers[1].name", "duplicate server name 'crm'"),
    ("same-route-twice", """
        servers:
          - name: one
            match: {authority: A.example, pathPrefix: /mcp/}
          - name: two
            match: {authority: a.example, pathPrefix: /mcp}
     """, 7, "servers[1].match.authority", "already matches"),
    ("authority-empty-list", """
        servers:
          - name: crm
            match: {authority: []}
     """, 5, "servers[0].match.authority", "at least 1 item"),
    ("authority-empty-string", """
        servers:
          - name: crm
            match:
              authority: ""
     """, 6, "servers[0].match.authority", "must not be empty"),
    ("authority-bad-port", """
        servers:
          - name: crm
            match:
              authority: [ok.example, "crm:99999"]
     """, 6, "servers[0].match.authority[1]", "out of range"),
    ("authority-unclosed-ipv6", """
        servers:
          - name: crm
            match: {authority: "[::1:8080"}
     """, 5, "servers[0].match.authority", "without ']'"),
    ("authority-missing", """
        servers:
          - name: crm
            match: {pathPrefix: /mcp}
     """, 5, "servers[0].match", "missing required field 'authority'"),
    ("path-prefix-relative", """
        servers:
          - name: crm
            match: {authority: a, pathPrefix: mcp}
     """, 5, "servers[0].match.pathPrefix", "must start with '/'"),
    ("path-prefix-query", """
        servers:
          - name: crm
            match: {authority: a, pathPrefix: "/mcp?x"}
     """, 5, "servers[0].match.pathPrefix", "no '?'"),
    ("upstream-scheme", """
        servers:
          - name: crm
            match: {authority: a}
            upstream: ftp://crm/mcp
     """, 6, "servers[0].upstream", "http:// or https://"),
    ("upstream-no-host", """
        servers:
          - name: crm
            match: {authority: a}
            upstream: "http:///mcp"
     """, 6, "servers[0].upstream", "invalid upstream URL"),
    ("spec-file-missing", """
        servers:
          - name: crm
            match: {authority: a}
            specFile: specs/crm.json
     """, 6, "servers[0].specFile", "not found"),
    ("decode-enum", "limits: {decode: [br]}\n", 3, "limits.decode[0]", "gzip"),
    ("max-depth-zero", "limits:\n  maxDepth: 0\n", 4, "limits.maxDepth", "at least 1"),
    ("bool-is-not-int", "limits:\n  maxDepth: true\n", 4, "limits.maxDepth", "got a boolean"),
    ("risk-nan", "risk: {blockAt: .nan}\n", 3, "risk.blockAt", "finite"),
    ("risk-negative-decay", "risk: {decayPerMinute: -1}\n", 3, "risk.decayPerMinute", "at least 0"),
    ("admin-token-empty", "admin: {token: ''}\n", 3, "admin.token", "must not be empty"),
    ("duplicate-yaml-key", """
        mode: enforce
        defaults: {}
        mode: monitor
     """, 5, "mode", "duplicate key 'mode' (first defined at line 3)"),
    ("duplicate-yaml-key-nested", """
        servers:
          - name: crm
            match: {authority: a, authority: b}
     """, 5, "servers[0].match.authority", "duplicate key"),
    ("non-string-key", "on: true\n", 3, "(top level)", "mapping keys must be strings"),
    ("merge-key", "x: &x {a: 1}\ny:\n  <<: *x\n", 5, "y", "merge keys"),
    ("custom-tag", "mode: !secret enforce\n", 3, "mode", "constructor"),
    ("yaml-syntax", "mode: [enforce\n", 4, "(top level)", "invalid YAML"),
    ("tab-indent", "defaults:\n\tfilterLists: true\n", 4, "(top level)", "invalid YAML"),
    ("second-document", "mode: enforce\n---\nmode: monitor\n", 4, "(top level)", "single YAML document"),
]


@pytest.mark.parametrize("body,line,path,message", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_error_reports_line_path_and_message(body: str, line: int, path: str, message: str) -> None:
    issues = issues_of(policy_yaml(body))
    matching = [i for i in issues if i.location.split(" ", 1)[1] == path and message in i.message]
    assert matching, "\n".join(map(str, issues))
    assert matching[0].line == line, str(matching[0])
    assert matching[0].location.startswith(f"policy.yaml:{line}:")


def test_header_errors_and_missing_kind() -> None:
    issues = issues_of("apiVersion: mcp-extauthz/v2\n")
    messages = [str(i) for i in issues]
    assert any("missing required field 'kind'" in m for m in messages)
    assert any(m.startswith("policy.yaml:1:13 apiVersion:") and "mcp-extauthz/v1" in m for m in messages)


def test_all_errors_reported_sorted_by_line() -> None:
    text = policy_yaml("""
        mode: loud
        defaults:
          filterLists: 3
          nope: 1
        servers:
          - name: Bad Name
            match: {authority: ""}
        limits: {maxDepth: -2}
    """)
    issues = issues_of(text)
    assert [i.line for i in issues] == sorted(i.line for i in issues)
    assert {i.line for i in issues} >= {3, 5, 6, 8, 9, 10}


def test_policy_error_str_has_one_issue_per_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(policy_yaml("mode: x\ndefaults: {filterLists: 1}\n"), "p.yaml", "/")
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.issues) == 2
    assert lines[0].startswith("p.yaml:3:7 mode: ") and lines[1].startswith("p.yaml:4:25 defaults.filterLists: ")


# --- garbage never escapes as a raw exception ------------------------------------------------
def _laughs() -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines).encode()


GARBAGE = [
    ("empty", b"", "empty"),
    ("only-comments", b"# nothing here\n\n", "empty"),
    ("list-document", b"- a\n- b\n", "expected a mapping, got a list"),
    ("scalar-document", b"just a string", "expected a mapping, got a string"),
    ("null-document", b"---\n", "expected a mapping, got null"),
    ("binary", bytes(range(256)) * 4, "not valid UTF-8"),
    ("latin1", "mode: enforcé\n".encode("latin-1"), "not valid UTF-8"),
    ("nul-byte", b"apiVersion: mcp\x00\n", "unacceptable character"),
    ("deep-flow", b"[" * 50000 + b"]" * 50000, "nested deeper"),
    ("deep-block", "".join(" " * i + "a:\n" for i in range(100)).encode(), "nested deeper"),
    ("too-big", b"a: '" + b"x" * (1 << 20) + b"'\n", "larger than"),
    ("billion-laughs", _laughs(), "too large"),
    ("recursive-alias", b"a: &a [*a]\n", "nested deeper"),
    ("complex-key", b"? [a, b]\n: 1\n", "must be strings"),
    ("set-tag", b"apiVersion: !!set {a, b}\n", "unsupported YAML tag"),
    ("json-with-nan", b'{"apiVersion": "mcp-extauthz/v1", "kind": "Policy", "risk": {"blockAt": .NaN}}',
     "finite"),
]


@pytest.mark.parametrize("data,message", [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_gives_policy_error(data: bytes, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_bytes(data, "policy.yaml", "/")
    assert info.value.issues and message in str(info.value)


def test_utf8_bom_is_accepted() -> None:
    doc = parse_policy_bytes(b"\xef\xbb\xbf" + policy_yaml(SERVER).encode(), "p.yaml", "/")
    assert doc["servers"][0]["name"] == "crm"


def test_missing_file_and_bad_directory(tmp_path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy_document(str(tmp_path / "absent.yaml"))
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "b.yaml").write_text("x: 1\n")
    with pytest.raises(PolicyError, match="exactly one"):
        load_policy_document(str(tmp_path))


def test_directory_with_a_single_yaml_file(tmp_path) -> None:
    (tmp_path / "mcp-policy.yml").write_text(policy_yaml(SERVER))
    (tmp_path / "README.txt").write_text("not yaml")
    assert load_policy(str(tmp_path)).source == str(tmp_path / "mcp-policy.yml")


def test_spec_file_resolves_relative_to_policy(tmp_path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "crm.json").write_text(json.dumps({"tools": []}))
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(SERVER + "    specFile: specs/crm.json\n"))
    policy = load_policy(str(path))
    assert policy.servers[0].spec_file == os.path.join(str(tmp_path), "specs", "crm.json")
    assert policy.source == str(path)
