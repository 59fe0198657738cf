"""`check_policy_main`: the body of `extauthz check-policy`."""

from __future__ import annotations

import io
from pathlib import Path

from extauthz.policy.check import check_policy_main
from tests.unit.policy.policy_helpers import policy_yaml


def test_ok_output(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml("""
        servers:
          - name: crm
            match: {authority: a}
            tools: [{name: t, allow: {groups: [g]}}]
            prompts: [{name: "*", allow: {authenticated: true}}]
    """))
    out = io.StringIO()
    assert check_policy_main(str(path), out) == 0
    assert out.getvalue() == f"OK: {path} (1 servers, 2 rules)\n"


def test_default_policy_file_checks_ok() -> None:
    out = io.StringIO()
    assert check_policy_main("extauthz/policy/default.yaml", out) == 0
    assert out.getvalue() == "OK: extauthz/policy/default.yaml (1 servers, 7 rules)\n"


def test_each_issue_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml("mode: loud\ndefaults:\n  filterLists: 1\n"))
    out = io.StringIO()
    assert check_policy_main(str(path), out) == 1
    assert out.getvalue().splitlines() == [
        f"{path}:3:7 mode: must be one of \"enforce\", \"monitor\" (got \"loud\")",
        f"{path}:5:16 defaults.filterLists: expected true or false, got an integer",
    ]


def test_unreadable_and_garbage(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check_policy_main(str(tmp_path / "missing.yaml"), out) == 1
    assert "cannot read policy" in out.getvalue()
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\xff\xfe\x00binary")
    out = io.StringIO()
    assert check_policy_main(str(garbage), out) == 1
    assert "not valid UTF-8" in out.getvalue()
