"""Glob semantics: `*` stays in a segment, `**` crosses them, everything else is literal."""

from __future__ import annotations

import pytest

from extauthz.policy.globs import compile_glob, glob_problem, is_glob

CASES = [
    # (pattern, name, matches)
    ("lookup_customer", "lookup_customer", True),
    ("lookup_customer", "lookup_customerX", False),
    ("lookup_customer", "Lookup_customer", False),
    ("export_*", "export_csv", True),
    ("export_*", "export_", True),
    ("export_*", "export", False),
    ("export_*", "export_a/b", False),
    ("export_*", "xexport_csv", False),
    ("*", "anything", True),
    ("*", "", True),
    ("*", "a/b", False),
    ("**", "a/b/c", True),
    ("crm://customers/*", "crm://customers/42", True),
    ("crm://customers/*", "crm://customers/{id}", True),
    ("crm://customers/*", "crm://customers/42/notes", False),
    ("crm://customers/*", "crm://customers/", True),
    ("crm://reports/**", "crm://reports/2024/q1/summary", True),
    ("crm://reports/**", "crm://reports/x", True),
    ("crm://reports/**", "crm://reportsX/x", False),
    ("crm://*/x", "crm://a/x", True),
    ("crm://*/x", "crm://a/b/x", False),
    ("crm://**/x", "crm://a/b/x", True),
    ("a.b", "a.b", True),
    ("a.b", "aXb", False),
    ("a.*", "a.b", True),
    ("a.*", "aXb", False),
    ("[abc]", "[abc]", True),
    ("[abc]", "a", False),
    ("tool?", "tool?", True),
    ("tool?", "tools", False),
    ("a+b", "aab", False),
    ("(x|y)", "x", False),
    ("^x$", "^x$", True),
    ("new*line", "new\nline", True),
    ("x*", "x\n", True),
    ("x", "x\n", False),
]


@pytest.mark.parametrize("pattern,name,expected", CASES,
                         ids=[f"{p!r}~{n!r}" for p, n, _ in CASES])
def test_glob_matches(pattern: str, name: str, expected: bool) -> None:
    matcher = compile_glob(pattern)
    assert matcher.matches(name) is expected
    assert matcher(name) is expected


def test_is_glob() -> None:
    assert is_glob("export_*") and is_glob("**")
    assert not is_glob("lookup.customer[1]?")


@pytest.mark.parametrize("pattern", ["", "a***", "***"])
def test_invalid_globs_rejected(pattern: str) -> None:
    assert glob_problem(pattern)
    with pytest.raises(ValueError):
        compile_glob(pattern)
