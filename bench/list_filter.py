"""What filtering lists for a caller costs (issue 14): the learn header the Check writes for one
`tools/list`, and what ext_proc does before the first byte of the response (resolve the caller
from the forwarded claims, compare fingerprints), for a token with 1 group and with 200 long
directory-style groups; then filtering one 50-tool JSON list. Median of interleaved rounds.

    python bench/list_filter.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from extauthz.app import App
from extauthz.envoy.convert import to_check_response
from extauthz.mcp.learnheader import LEARN_HEADER
from extauthz.mcp.request import HttpRequest

JWT_NS = "envoy.filters.http.jwt_authn"
GROUPS_200 = ["support"] + [f"CN=grp-{i:03d}-engineering-platform-team,OU=Security Groups,OU=Corp,DC=emea,DC=example,DC=com"
                            for i in range(199)]
BODY = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
LIST = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
    {"name": n, "inputSchema": {"type": "object"}} for n in
    ["lookup_customer", "search_customers", "export_customers", "update_settings"] + [f"t{i}" for i in range(46)]]}})


def per_op(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n, rounds = (300, 3) if a.quick else (2000, 7)
    app = App(None, decision_out=open(os.devnull, "wb"))
    print(f"{'groups':>7} {'header chars':>13} {'Check us':>9} {'ext_proc start us':>18} {'filter 50 tools us':>19}")
    for label, groups in (("1", ["support"]), ("200", GROUPS_200)):
        claims = {"iss": "https://issuer", "sub": "alice", "client_id": "agent", "groups": groups}
        md = {JWT_NS: {"jwt_payload": claims}}
        req = HttpRequest(method="POST", path="/mcp", authority="127.0.0.1", body=BODY,
                          headers={"content-type": "application/json"}, metadata=md)
        d = app.check(req)
        marker = {h.header.key: h.header.value for h in to_check_response(d).ok_response.headers}[LEARN_HEADER]
        app.record_pending()

        def start() -> Any:
            return app.learner.exchange("crm", d.caller.key, "", marker, ({}, md))

        def filt() -> bytes:
            ex = start()
            ex.on_response_headers(200, {"content-type": "application/json"})
            return ex.rewriter.feed(LIST, True)

        check, ext, flt = [], [], []
        for _ in range(rounds):
            check.append(per_op(lambda: app.check(req), n))
            app.record_pending()
            ext.append(per_op(start, n))
            flt.append(per_op(filt, n) - ext[-1])
        print(f"{label:>7} {len(marker):>13} {statistics.median(check):>9.1f} {statistics.median(ext):>18.1f}"
              f" {statistics.median(flt):>19.1f}")


if __name__ == "__main__":
    main()
