"""The `extauthz` command line (DESIGN.md "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import sys


def _serve(a: argparse.Namespace) -> int:
    from extauthz import logs
    from extauthz.app import load_app
    from extauthz.policy.errors import PolicyError
    from extauthz.server import serve, server_credentials

    logs.setup(a.log_level)
    creds = None
    if a.tls_cert or a.tls_key or a.tls_client_ca:
        if not (a.tls_cert and a.tls_key):
            print("--tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        try:
            creds = server_credentials(a.tls_cert, a.tls_key, a.tls_client_ca)
        except OSError as e:
            print(f"cannot read TLS files: {e}", file=sys.stderr)
            return 1
    try:
        app = load_app(a.policy)
    except PolicyError as e:
        print(f"policy {a.policy} refused:\n{e}", file=sys.stderr)
        return 1
    cfg = None
    if a.redis:
        from extauthz.shared.config import SharedConfigError, redis_config
        try:
            cfg = redis_config(a.redis, prefix=a.redis_prefix, password_file=a.redis_password_file,
                               ca_file=a.redis_ca, cert_file=a.redis_cert, key_file=a.redis_key)
        except (SharedConfigError, OSError) as e:
            print(f"--redis refused: {e}", file=sys.stderr)
            return 2
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()

    def shared() -> object:
        if cfg is None:
            return None
        from extauthz.shared.redis import RedisShared
        s = RedisShared(cfg, app)
        app.metrics.watch_shared(s.status)
        return s
    if a.workers != 1 and a.worker_fd is None:
        from extauthz.workers.supervisor import Supervisor, cpu_count, worker_args
        n = a.workers if a.workers > 0 else cpu_count()

        async def supervise() -> int:
            return await Supervisor(app, n, worker_args(a), shared()).run(a.host, a.admin_port, a.drain_seconds)
        return asyncio.run(supervise())

    async def run() -> None:
        await serve(app, host=a.host, grpc_port=a.grpc_port, admin_port=a.admin_port, drain_seconds=a.drain_seconds,
                    credentials=creds, worker_fd=a.worker_fd, worker_index=a.worker_index, shared=shared())
    asyncio.run(run())
    return 0


def _check_policy(a: argparse.Namespace) -> int:
    from extauthz.policy.check import check_policy_main
    return check_policy_main(a.path)


def _replay(a: argparse.Namespace) -> int:
    from extauthz.replay import replay_main
    return replay_main(a.policy, a.traffic)


def _inventory(a: argparse.Namespace) -> int:
    from extauthz.admin.client import inventory_main
    return inventory_main(a.admin, a.format, server=a.server)


def _investigate(a: argparse.Namespace) -> int:
    from extauthz.admin.investigate_cli import investigate_main
    return investigate_main(a.admin, a.query, a.format, a.since)


def _approve(a: argparse.Namespace) -> int:
    from extauthz.admin.client import approve_main
    return approve_main(a.admin, a.token, a.server, a.kind, a.name)


def _suggest_policy(a: argparse.Namespace) -> int:
    from extauthz.admin.client import suggest_main
    return suggest_main(a.admin, a.out, a.inventory)


def _discover(a: argparse.Namespace) -> int:
    from extauthz.discovery.cli import discover_main
    return discover_main(a)


def _demo(a: argparse.Namespace) -> int:
    from extauthz.demo.run import demo_main
    return demo_main(once=a.once)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="extauthz", description="Envoy external authorization for MCP")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the gRPC ext_authz + ext_proc service and admin HTTP")
    s.add_argument("--policy", required=True, help="policy YAML file, or the directory a ConfigMap is mounted at")
    s.add_argument("--grpc-port", type=int, default=9191)
    s.add_argument("--admin-port", type=int, default=9192)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--redis", default=None,
                   help="redis:// or rediss:// URL: session owners, learned specs, approvals, visibility and risk "
                        "shared by every replica and worker (password: URL, --redis-password-file or "
                        "$EXTAUTHZ_REDIS_PASSWORD)")
    s.add_argument("--redis-prefix", default=None, help="key prefix, one per release (default mcp-extauthz)")
    s.add_argument("--redis-password-file", default=None, help="file holding the Redis password (a mounted Secret)")
    s.add_argument("--redis-ca", default=None, help="rediss://: CA bundle to verify the server")
    s.add_argument("--redis-cert", default=None, help="rediss://: client certificate")
    s.add_argument("--redis-key", default=None, help="rediss://: client key")
    s.add_argument("--drain-seconds", type=float, default=10.0)
    s.add_argument("--log-level", default="info")
    s.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop",
                   help="event loop (uvloop: the grpc.aio floor measured ~15%% higher with it)")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the gRPC port (0 = one per CPU); learned state is relayed")
    s.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    s.add_argument("--tls-cert", help="PEM certificate for the gRPC port (enables TLS)")
    s.add_argument("--tls-key", help="PEM private key for --tls-cert")
    s.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mTLS)")
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check-policy", help="validate a policy file")
    c.add_argument("path")
    c.set_defaults(fn=_check_policy)

    r = sub.add_parser("replay", help="decide recorded traffic offline, one JSON decision per line")
    r.add_argument("--policy", required=True)
    r.add_argument("--traffic", required=True)
    r.set_defaults(fn=_replay)

    i = sub.add_parser("inventory", help="the live catalog of servers and capabilities")
    i.add_argument("--admin", default="http://127.0.0.1:9192")
    i.add_argument("--format", choices=("table", "json"), default="table")
    i.add_argument("--server", default=None, help="only this server")
    i.set_defaults(fn=_inventory)

    iv = sub.add_parser("investigate", help="one actor: its MCP and user sessions, alerts and timeline")
    iv.add_argument("--admin", default="http://127.0.0.1:9192")
    iv.add_argument("--format", choices=("table", "json"), default="table")
    iv.add_argument("--since", default=None, metavar="DURATION", help="only decisions this recent (90s, 15m, 2h, 1d)")
    iv.add_argument("query", help="caller key, subject, client id, MCP session id, user session (sid) or decision id")
    iv.set_defaults(fn=_investigate)

    ap = sub.add_parser("approve", help="lift the quarantine of a capability that changed (after review)")
    ap.add_argument("--admin", default="http://127.0.0.1:9192")
    ap.add_argument("--token", default=None, help="the policy's admin.token (default: $EXTAUTHZ_ADMIN_TOKEN)")
    ap.add_argument("server")
    ap.add_argument("kind", choices=("tool", "tools", "resource", "resources", "resourceTemplate",
                                     "resourceTemplates", "prompt", "prompts"))
    ap.add_argument("name")
    ap.set_defaults(fn=_approve)

    sp = sub.add_parser("suggest-policy", help="write a least-privilege policy from observed, allowed use")
    sp.add_argument("--admin", default="http://127.0.0.1:9192")
    sp.add_argument("--inventory", default=None, help="read a saved `extauthz inventory --format json` instead")
    sp.add_argument("--out", default=None, help="write here (default: stdout)")
    sp.set_defaults(fn=_suggest_policy)

    v = sub.add_parser("discover", help="act as an MCP client: fetch a server's whole spec, with findings")
    v.add_argument("url", help="the MCP endpoint (streamable HTTP, or a 2024-11-05 .../sse URL)")
    v.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'",
                   help="send this header on every request (repeatable), e.g. -H 'Authorization: Bearer ...'")
    v.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: a readable report; json: the spec snapshot, loadable as a pinned specFile")
    v.add_argument("--out", metavar="FILE", help="write the output to FILE instead of stdout")
    v.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (default 30)")
    v.add_argument("--protocol", choices=("auto", "legacy"), default="auto",
                   help="auto: server/discover (2026-07-28), else the initialize handshake; legacy: always initialize")
    v.set_defaults(fn=_discover)

    d = sub.add_parser("demo", help="real Envoy + demo MCP server + this service, and a scripted agent")
    d.add_argument("--once", action="store_true", help="exit after the script")
    d.set_defaults(fn=_demo)

    a = p.parse_args(argv)
    return int(a.fn(a) or 0)


if __name__ == "__main__":
    sys.exit(main())
