"""URI templates as servers publish them: every RFC 6570 operator and the explode modifier matched
with the SDK's `UriTemplate`, FastMCP's `{path*}` through the fallback, traversal refused, and the
decision core reading through a template at depth (App.check)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.mcp.request import HttpRequest
from extauthz.specs.model import template_from
from extauthz.specs.templates import compile_template

# (template, URI, matches?) -- one row per operator/explode shape, the URIs a client builds from it.
ROWS = [
    # simple {x}: one segment
    ("kb://notes/{id}", "kb://notes/n-1", True),
    ("kb://notes/{id}", "kb://notes/a/b", False),
    ("kb://notes/{id}", "kb://notes/", True),           # the SDK binds an empty value
    # reserved {+x}: spans segments, stops at ? and #
    ("file:///{+path}", "file:///src/pkg/main.py", True),
    ("file:///{+path}", "file:///src?x=1", False),
    # fragment {#x}
    ("doc://guide{#section}", "doc://guide#install", True),
    # label {.x}
    ("file:///docs/{name}{.ext}", "file:///docs/readme.md", True),
    ("file:///docs/{name}{.ext}", "file:///docs/readme", False),
    # path segments {/x} and explode {/x*}
    ("repo://r{/owner}", "repo://r/alice", True),
    ("repo://files{/path*}", "repo://files/a/b/c.txt", True),
    ("repo://files{/path*}", "repo://files", True),          # an empty list expands to nothing
    ("repo://files{/path*}", "repo://filesx", False),
    # path parameters {;x} and explode {;x*}
    ("map://tile{;lat,lon}", "map://tile;lat=1;lon=2", True),
    ("map://tile{;layers*}", "map://tile;layers=a;layers=b", True),
    # label explode {.x*}
    ("host://www{.domain*}", "host://www.example.com", True),
    # query {?x} and continuation {&x}: optional, any order
    ("search://articles{?q,lang}", "search://articles?q=refunds&lang=en", True),
    ("search://articles{?q,lang}", "search://articles?lang=en", True),
    ("search://articles{?q,lang}", "search://articles", True),
    ("search://articles{?q}{&page}", "search://articles?q=a&page=2", True),
    ("search://articles{?q}", "search://other?q=a", False),
    # FastMCP's {path*} (the SDK rejects it): one or more characters across segments
    ("kb://articles/{path*}", "kb://articles/billing/refunds.md", True),
    ("kb://articles/{path*}", "kb://articles/a/b/c.md", True),
    ("kb://articles/{path*}", "kb://articles/top.md", True),
    ("kb://articles/{path*}", "kb://articles/", False),          # one or more
    ("kb://articles/{path*}", "kb://articles/a?x=1", False),     # no query declared
    ("kb://articles/{path*}{?rev}", "kb://articles/a/b?rev=3", True),
    ("kb://{section}/{path*}", "kb://billing/x/y", True),
    ("kb://{section}/{path*}", "kb://billing", False),
]


@pytest.mark.parametrize(("template", "uri", "expected"), ROWS, ids=[f"{t} {u}" for t, u, _ in ROWS])
def test_operator_and_explode_matching(template: str, uri: str, expected: bool) -> None:
    assert compile_template(template).matches(uri) is expected


@pytest.mark.parametrize("template", ["file:///{+path}", "repo://files{/path*}", "doc://guide{#section}",
                                      "search://articles{?q}", "kb://articles/{path*}"])
def test_sdk_semantics_unless_the_sdk_rejects_the_template(template: str) -> None:
    how = compile_template(template).how
    assert how == ("fastmcp" if template == "kb://articles/{path*}" else "sdk")


# Dot segments anywhere a server might take a captured value as a path: refused in every shape,
# including the parts of a URI (fragment, query) that uri_problem does not look at.
TRAVERSAL = [
    ("kb://articles/{path*}", "kb://articles/a/../../etc/passwd"),
    ("kb://articles/{path*}", "kb://articles/.."),
    ("kb://articles/{path*}", "kb://articles/./a"),
    ("file:///{+path}", "file:///a/../b"),
    ("repo://files{/path*}", "repo://files/a/../b"),
    ("repo://files{/path*}", "repo://files/."),
    ("doc://guide{#section}", "doc://guide#../../secret"),
    ("search://articles{?q}", "search://articles?q=../../x"),
    ("kb://notes/{id}", "kb://notes/.."),
]


@pytest.mark.parametrize(("template", "uri"), TRAVERSAL, ids=[u for _, u in TRAVERSAL])
def test_dot_segments_never_match(template: str, uri: str) -> None:
    assert compile_template(template).matches(uri) is False


@pytest.mark.parametrize("template", ["kb://{a:3}", "kb://{a}{b}", "kb://{+a}/{+b}", "kb://{x", "kb://{}",
                                      "kb://{p*}/{q*}"])
def test_a_template_neither_grammar_reads_matches_nothing(template: str) -> None:
    m = compile_template(template)
    assert m.how == "none"
    assert not m.matches("kb://abc") and not m.matches("kb://a/b")


def test_fallback_mirrors_fastmcp_build_regex() -> None:
    """fastmcp 2.14 `build_regex`: `{x}` -> `[^/]+`, `{x*}` -> `.+`, `{?..}` optional. Ours, via the SDK,
    except that `{x*}` stops at `?` and `#` (a FastMCP client never sends those unencoded)."""
    m = compile_template("kb://{section}/{path*}")
    assert m.how == "fastmcp"
    assert m.matches("kb://s/a/b/c")
    assert not m.matches("kb://s/a#frag")
    assert not m.matches("kb://s/a/b/../c")


def test_compiled_once_at_learn_time(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = template_from({"uriTemplate": "file:///{+path}", "name": "file"})
    assert spec is not None and spec.matcher.how == "sdk"

    def no_parse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a template was parsed again at match time")
    monkeypatch.setattr("mcp.shared.uri_template.UriTemplate.parse", no_parse)
    monkeypatch.setattr("extauthz.specs.templates.UriTemplate.parse", no_parse)
    assert spec.matcher.matches("file:///src/main.py")


# -- through the decision core --------------------------------------------------------------------

POLICY = """
apiVersion: mcp-extauthz/v1
kind: Policy
defaults: {unknownCapability: deny}
identity: {sources: [{jwtMetadata: {filter: envoy.filters.http.jwt_authn, key: jwt_payload}}], groupsClaim: groups}
servers:
  - name: kb
    match: {authority: kb.example.com, pathPrefix: /mcp}
    resources:
      - {uri: "kb://articles/*", allow: {groups: [staff]}}
      - {uri: "file:///{+path}", allow: {groups: [staff]}}
"""
CLAIMS = {"iss": "https://issuer", "sub": "sam", "groups": ["staff"], "client_id": "agent"}


@pytest.fixture
def app(tmp_path: Path) -> App:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    a = App(str(p), decision_out=io.BytesIO())
    a.specs.apply_page("kb", "resourceTemplates", [{"uriTemplate": "kb://articles/{path*}", "name": "article"},
                                                   {"uriTemplate": "file:///{+path}", "name": "file"}],
                       first=True, last=True)
    return a


def read(app: App, uri: Any) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
    return app.check(HttpRequest(method="POST", path="/mcp", authority="kb.example.com",
                                 headers={"content-type": "application/json"}, body=body, partial=False,
                                 metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": CLAIMS}}))


@pytest.mark.parametrize("uri", ["kb://articles/top.md", "kb://articles/billing/refunds.md",
                                 "kb://articles/billing/2024/refunds.md", "file:///src/pkg/main.py"])
def test_reads_through_templates_at_depth_are_allowed(app: App, uri: str) -> None:
    d = read(app, uri)
    assert d.reason is Reason.ALLOWED, d.detail


@pytest.mark.parametrize("uri", ["kb://articles/billing/../../secrets", "kb://articles/%2e%2e/x",
                                 "kb://articles/billing%2Frefunds.md", "kb://articles/%252e%252e/x"])
def test_traversal_and_encoded_forms_are_malformed(app: App, uri: str) -> None:
    assert read(app, uri).reason is Reason.MALFORMED_REQUEST


def test_a_uri_no_template_matches_is_unknown(app: App) -> None:
    assert read(app, "kb://articles/").reason is Reason.UNKNOWN_CAPABILITY
    assert read(app, "kb://other/x").reason is Reason.UNKNOWN_CAPABILITY
