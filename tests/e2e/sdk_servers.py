"""Small SDK servers the end-to-end tests start behind a real Stack: a shared command line for
the server scripts, and a Stack with a policy that lets any authenticated caller call any tool
(so what a test observes is the feature under test, not an ACL)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

ALLOW_ALL = """\
apiVersion: mcp-extauthz/v1
kind: Policy
identity:
  sources:
    - jwtMetadata: {{filter: envoy.filters.http.jwt_authn, key: jwt_payload}}
servers:
  - name: {server}
    match: {{authority: ["127.0.0.1", "localhost"], pathPrefix: /mcp}}
    tools:
      - {{name: "*", allow: {{authenticated: true}}}}
{extra}"""


def stack_for(script: str, server: str, policy_path: Path, extra: str = "", args: tuple[str, ...] = ()) -> Any:
    """A Stack (not started) with `tests/e2e/<script>` as the upstream and the allow-all policy."""
    from extauthz.demo.stack import Stack
    from extauthz.demo.tokens import TokenIssuer

    policy_path.write_text(ALLOW_ALL.format(server=server, extra=extra))
    return Stack(str(policy_path), tokens=TokenIssuer(),
                 upstream_cmd=[sys.executable, str(HERE / script), "--port", "{port}", *args])


def serve(build: Callable[[], Any]) -> None:
    """`python <server>.py --port N [--stateless] [--json-response]` on 127.0.0.1."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--json-response", action="store_true")
    a = p.parse_args()
    import uvicorn
    app = build().streamable_http_app(stateless_http=a.stateless, json_response=a.json_response, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
