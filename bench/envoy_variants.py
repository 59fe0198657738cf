"""The Envoy configs and inputs of the through-Envoy benches: config B (`envoy_config.render`, our full
config), A (B minus everything extauthz adds), copies of B pointed at another ext_authz server (N:
the do-nothing server), the bench policy and call, and Envoy's access-log phase timings."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import common as C
import yaml
from envoy_load import LoadResult

from extauthz.demo.envoy_config import render
from extauthz.detect.capability import classify_capability

ACCESS_LOG_FORMAT = ("%RESPONSE_CODE% %COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)% "
                     "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)% %COMMON_DURATION(US_TX_BEG:US_RX_END:us)% "
                     "%FILTER_STATE(envoy.filters.http.ext_authz:FIELD:latency_us)%\n")


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    for f in doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            return f["typed_config"]
    raise SystemExit("bench error: no http_connection_manager in the rendered Envoy config")


def _listen_on(doc: dict[str, Any], listen: int, admin: int) -> None:
    doc["admin"]["address"]["socket_address"]["port_value"] = admin
    doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen


def _access_log(doc: dict[str, Any], path: Path) -> None:
    _hcm(doc)["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}}}]


def envoy_configs(*, listen_a: int, listen_b: int, admin_a: int, admin_b: int, upstream_port: int, authz_port: int,
                  jwks_json: str, access_log_dir: Path | None, listen_n: int | None = None,
                  admin_n: int | None = None, null_port: int | None = None) -> tuple[str, str, str | None]:
    """(A: plain router, B: our full config, N: B pointed at the null server or None), all YAML.

    A is B minus everything extauthz adds; N is a copy of B (made after the access log and the
    ext_authz stats are set) with only its ports, its access log file and the `extauthz` cluster's
    endpoint changed, so N - A measures exactly the ext_authz hop B pays, minus the service's work."""
    b = yaml.safe_load(render(listen_port=listen_b, admin_port=admin_b, upstream_host="127.0.0.1",
                              upstream_port=upstream_port, authz_host="127.0.0.1", authz_port=authz_port,
                              jwks_json=jwks_json, header_comment=False))
    a = copy.deepcopy(b)
    _listen_on(a, listen_a, admin_a)
    a["static_resources"]["clusters"] = [c for c in a["static_resources"]["clusters"] if c["name"] != "extauthz"]
    hcm = _hcm(a)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    for key in ("early_header_mutation_extensions", "local_reply_config"):
        hcm.pop(key, None)
    vh = hcm["route_config"]["virtual_hosts"][0]
    vh["routes"] = [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]
    if access_log_dir is not None:
        for doc, name in ((a, "a"), (b, "b")):
            _access_log(doc, access_log_dir / f"access-{name}.log")
        for f in _hcm(b)["http_filters"]:
            if f["name"] == "envoy.filters.http.ext_authz":
                f["typed_config"]["emit_filter_state_stats"] = True     # -> ext_authz latency_us in the log
    n = None
    if null_port is not None:
        if listen_n is None or admin_n is None:
            raise ValueError("envoy N needs listen_n and admin_n")
        n = repoint(b, listen=listen_n, admin=admin_n, authz_port=null_port,
                    access_log=access_log_dir / "access-n.log" if access_log_dir is not None else None)
    return (yaml.safe_dump(a, sort_keys=False), yaml.safe_dump(b, sort_keys=False),
            yaml.safe_dump(n, sort_keys=False) if n is not None else None)


def repoint(b: dict[str, Any] | str, *, listen: int, admin: int, authz_port: int,
            access_log: Path | None) -> dict[str, Any]:
    """A copy of config B (a doc or its YAML) with only its ports, its access log file and the `extauthz`
    cluster's endpoint changed: the same Envoy in front of another ext_authz server."""
    doc = copy.deepcopy(b) if isinstance(b, dict) else yaml.safe_load(b)
    _listen_on(doc, listen, admin)
    if access_log is not None:
        _access_log(doc, access_log)
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "extauthz")
    for group in cluster["load_assignment"]["endpoints"]:
        for ep in group["lb_endpoints"]:
            ep["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=authz_port)
    return doc


def write_policy(tmp: Path, sensitive: bool = False) -> tuple[Path, str, dict[str, Any]]:
    """policy.yaml + pinned spec.json in `tmp`; returns (policy path, the tool to call, its arguments).

    The tool is a small `billing_*`, `crm_*` or `orders_*` one the support caller may call with a
    `customer_id` the constraint checks. By default it is one the inventory does not classify as
    sensitive: calling a sensitive tool is scored as extraction, so the caller soon has a risk
    score and every call of theirs is observed over ext_proc (up to 50 a second); with
    `sensitive`, that is what is measured instead."""
    policy, tools = C.write_pinned_policy(tmp)
    policy_text = C.POLICY.read_text()
    tool = next(t for prefix in ("billing_", "crm_", "orders_") for t in C.tools_by_shape(tools)["small"]
                if t["name"].startswith(prefix) and t["name"] not in policy_text
                and "customer_id" in t["inputSchema"]["required"]
                and bool(classify_capability("tools", t)) == sensitive)
    admin_tool = next(t for t in C.tools_by_shape(tools)["small"] if t["name"].startswith("admin_"))
    return policy, tool["name"], {"args": C.small_args(tool), "admin": admin_tool}


def access_log(path: Path, offset: int, res: LoadResult) -> tuple[dict[str, list[int]], int]:
    """Per-request Envoy timings (µs) of one run from the access log, warm-up lines dropped."""
    time.sleep(0.5)                        # Envoy flushes the file every 200 ms (--file-flush-interval-msec)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return {}, offset
    lines = data.splitlines()
    n_warm = max(0, len(lines) - res.scheduled)
    out: dict[str, list[int]] = {"total": [], "before_upstream": [], "upstream": [], "ext_authz": []}
    for line in lines[n_warm:]:
        parts = line.split()
        if len(parts) < 5 or parts[0] != b"200":
            continue
        for key, v in zip(("total", "before_upstream", "upstream", "ext_authz"), parts[1:5]):
            if v.isdigit():
                out[key].append(int(v))
    return out, offset + len(data)

