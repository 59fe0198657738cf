"""Memory of the service's state: RSS and Python heap per learned tool, per MCP session, per caller.

Every measurement runs in a fresh subprocess (`--child STAGE --mode rss|trace`) that builds the
state up to the stage before it, measures, adds the stage, and measures again; only the delta is the
stage's. Two modes, never mixed in one process:

* **rss**: VmRSS from /proc/self/status after `gc.collect()`: what the pod is charged for, including
  allocator slack and memory outside the Python heap (jsonschema_rs validators live in Rust's heap).
* **trace**: `tracemalloc` started just before the stage (1 frame): the Python objects the stage left
  behind, by source line. tracemalloc's own bookkeeping inflates RSS, so RSS is never read here.

Stages (each on top of the previous one unless said otherwise):

| stage | what is added |
|---|---|
| imports | `extauthz.app` and the benches' helpers, on top of a bare interpreter |
| policy | `App(bench/policy.yaml)`: the baseline service state |
| tools | 1,000 learned tools (`specs.apply_page`, the generator in common.py) |
| validators | one valid `tools/call` per tool through `App.check`: 1,000 compiled validators |
| sessions (check) | N tools/calls through `App.check`, each with its own `mcp-session-id`, 10 callers |
| sessions (touch) | N `sessions.touch()` calls directly (the registry alone, no decision path) |
| callers | N tools/calls through `App.check` from N distinct `sub` claims, no session |
| callers+sessions | N distinct callers, each with its own session |

    python bench/memory.py [--quick] [--sessions N] [--callers N]
"""

from __future__ import annotations

import argparse
import gc
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def vm(field: str = "VmRSS") -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"/proc/self/status has no {field} (Linux only)")


RSS_AT_START = vm()                     # before any import below: the bare interpreter

import common as C  # noqa: E402
import orjson  # noqa: E402

SESSION_FMT = "{:032x}"                 # what the Python SDK issues: uuid4().hex, 32 characters
ALL_GROUPS = ["support", "employees", "admin", "hr", "hr-admins", "finance", "analysts"]


# --- building state (children only) --------------------------------------------------------------


def claims(sub: str, groups: list[str] | None = None) -> dict[str, Any]:
    return {**C.CLAIMS, "sub": sub, "groups": groups or ["support", "employees"]}


def http(body: bytes, caller_claims: dict[str, Any], session: str | None) -> Any:
    from extauthz.mcp.request import HttpRequest

    headers = C.headers(body)
    headers.pop("mcp-session-id")
    if session is not None:
        headers["mcp-session-id"] = session
    return HttpRequest(method="POST", path=C.PATH, authority=C.AUTHORITY, headers=headers, body=body,
                       partial=False, metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": caller_claims}})


def valid_args(tool: dict[str, Any], shape: str) -> dict[str, Any]:
    if shape == "nested":
        return C.nested_args(1)
    if shape == "records":
        return C.records_args(300)
    if shape == "text":
        return C.text_args(200)
    return C.small_args(tool)


class State:
    def __init__(self, policy: Path, n: int) -> None:
        self.policy, self.n = policy, n
        self.app: Any = None
        self.spec_bytes = orjson.dumps(C.make_tools())      # outside every measurement
        self.devnull = open(os.devnull, "wb")

    def imports(self) -> None:
        import extauthz.app  # noqa: F401
        import extauthz.envoy.convert  # noqa: F401
        from extauthz.mcp.request import HttpRequest  # noqa: F401

    def make_app(self) -> None:
        from extauthz.app import App
        self.app = App(str(self.policy), decision_out=self.devnull)

    def learn(self) -> None:
        tools = orjson.loads(self.spec_bytes)
        self.app.specs.apply_page(C.SERVER, "tools", tools, first=True, last=True)

    def compile_all(self, mark: Callable[[], None] = lambda: None) -> None:
        tools = orjson.loads(self.spec_bytes)
        shape_of = {t["name"]: shape for shape, ts in C.tools_by_shape(tools).items() for t in ts}
        caller = claims("validator-warmer", ALL_GROUPS)
        denied: list[str] = []
        for i, t in enumerate(tools):
            if i == len(tools) // 2:
                mark()
            d = self.app.check(http(C.call_body(t["name"], valid_args(t, shape_of[t["name"]]), i), caller, None))
            if not d.allowed:
                denied.append(f"{t['name']}: {d.reason.value} ({d.detail})")
        if denied:
            raise SystemExit(f"bench setup error: {len(denied)} of {len(tools)} calls were denied, e.g. "
                             + "; ".join(denied[:3]))
        from extauthz.specs.model import canonical_hash
        distinct = len({canonical_hash(t["inputSchema"]) for t in tools})    # two of the 1,000 coincide
        compiled = len(self.app.validators._cache)
        if compiled < distinct:
            raise SystemExit(f"bench setup error: {compiled} validators compiled for {distinct} distinct schemas")

    def _call(self) -> bytes:
        tools = orjson.loads(self.spec_bytes)
        tool = next(t for t in C.tools_by_shape(tools)["small"]
                    if t["name"].startswith("billing_") and t["name"] not in C.POLICY.read_text())
        return C.call_body(tool["name"], C.small_args(tool))

    def sessions_check(self, mark: Callable[[], None] = lambda: None) -> None:
        body = self._call()
        callers = [claims(f"user-{k}") for k in range(10)]
        check = self.app.check
        for i in range(self.n):
            if i == self.n // 2:
                mark()
            session_id = SESSION_FMT.format(i)          # in the service: a header value off the wire
            d = check(http(body, callers[i % 10], session_id))
            if not d.allowed:
                raise SystemExit(f"bench setup error: session call {i} denied: {d.reason.value} ({d.detail})")
        self._expect_sessions(self.n)

    def sessions_touch(self, mark: Callable[[], None] = lambda: None) -> None:
        touch = self.app.sessions.touch
        iss, client, sid = C.CLAIMS["iss"], C.CLAIMS["client_id"], C.CLAIMS["sid"]
        for i in range(self.n):
            if i == self.n // 2:
                mark()
            session_id = SESSION_FMT.format(i)
            caller_key = f"{iss}|user-{i % 10}|{client}"    # a fresh string per call, as Caller.key builds
            touch(session_id, caller_key, C.SERVER, user_session=sid, client_id=client, protocol_version=C.PROTOCOL)
        self._expect_sessions(self.n)

    def callers(self, with_sessions: bool, mark: Callable[[], None] = lambda: None) -> None:
        """Through the servicer's conversion (CheckRequest -> to_http_request), so the claims cache
        that conversion keeps per distinct caller is counted too."""
        from extauthz.envoy.convert import to_http_request

        body = self._call()
        check = self.app.check
        for i in range(self.n):
            if i == self.n // 2:
                mark()
            req = C.check_request(body, claims(f"caller-{i:07d}"))
            hdrs = req.attributes.request.http.headers
            if with_sessions:
                hdrs["mcp-session-id"] = SESSION_FMT.format(i)
            else:
                del hdrs["mcp-session-id"]
            d = check(to_http_request(req))
            if not d.allowed:
                raise SystemExit(f"bench setup error: caller {i} denied: {d.reason.value} ({d.detail})")
        self._expect_sessions(self.n if with_sessions else 0)

    def _expect_sessions(self, n: int) -> None:
        if len(self.app.sessions) != n:
            raise SystemExit(f"bench setup error: {len(self.app.sessions)} sessions tracked, expected {n} "
                             f"(sessions.maxSessions too low?)")


# (stage key, label, unit for the per-item column, steps before, the stage's step)
STAGES: list[tuple[str, str, str, list[str], str]] = [
    ("imports", "imports (extauthz.app, ...)", "", [], "imports"),
    ("policy", "policy loaded: App(policy.yaml)", "", ["imports"], "make_app"),
    ("tools", "+ 1,000 learned tools", "tool", ["imports", "make_app"], "learn"),
    ("validators", "+ validators for all 1,000 tools", "tool", ["imports", "make_app", "learn"], "compile_all"),
    ("sessions_check", "+ N sessions via App.check (10 callers)", "session",
     ["imports", "make_app", "learn", "compile_all"], "sessions_check"),
    ("sessions_touch", "+ N sessions via sessions.touch()", "session",
     ["imports", "make_app", "learn", "compile_all"], "sessions_touch"),
    ("callers", "+ N distinct callers via App.check, no session", "caller",
     ["imports", "make_app", "learn", "compile_all"], "callers_plain"),
    ("callers_sessions", "+ N distinct callers, one session each", "caller",
     ["imports", "make_app", "learn", "compile_all"], "callers_sessions"),
]


def run_step(state: State, step: str, mark: Callable[[], None] = lambda: None) -> None:
    """Run one step; steps that add many items call `mark` when half of them are in."""
    steps: dict[str, Callable[[], None]] = {
        "imports": state.imports, "make_app": state.make_app, "learn": state.learn,
        "compile_all": lambda: state.compile_all(mark), "sessions_check": lambda: state.sessions_check(mark),
        "sessions_touch": lambda: state.sessions_touch(mark), "callers_plain": lambda: state.callers(False, mark),
        "callers_sessions": lambda: state.callers(True, mark),
    }
    steps[step]()


def settle() -> None:
    for _ in range(3):
        gc.collect()


def child(stage: str, mode: str, policy: Path, n: int) -> int:
    key, _, _, before, step = next(s for s in STAGES if s[0] == stage)
    state = State(policy, n)
    for s in before:
        run_step(state, s)
    settle()
    out: dict[str, Any] = {"stage": key, "mode": mode, "rss_start": RSS_AT_START}
    if mode == "rss":
        r0 = vm()
        mid: list[int] = []

        def mark() -> None:
            settle()
            mid.append(vm())
        t0 = time.perf_counter()
        run_step(state, step, mark)
        out["seconds"] = time.perf_counter() - t0
        settle()
        out.update(rss_before=r0, rss_after=vm(), rss_mid=mid[0] if mid else None, hwm=vm("VmHWM"))
    else:
        import tracemalloc
        tracemalloc.start(1)
        run_step(state, step)
        settle()
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats = snap.statistics("lineno")
        root = str(C.ROOT) + os.sep
        sites = []
        for st in stats[:6]:
            fr = st.traceback[0]
            if fr.filename == __file__:       # objects the bench built and the service keeps (they come off
                code = linecache.getline(fr.filename, fr.lineno).strip()     # the wire in the service)
                sites.append([f"[bench: {code[:48]}]", st.size, st.count])
                continue
            name = fr.filename.replace(root, "")
            name = name.split("site-packages" + os.sep, 1)[-1]
            sites.append([f"{name}:{fr.lineno}", st.size, st.count])
        out.update(traced=current, traced_peak=peak, sites=sites)
    print(orjson.dumps(out).decode(), flush=True)
    state.devnull.close()
    return 0


# --- parent --------------------------------------------------------------------------------------


def write_policy(tmp: Path, n: int) -> Path:
    import yaml
    doc = yaml.safe_load(C.POLICY.read_text())
    doc.setdefault("sessions", {})["maxSessions"] = max(n, 100_000)   # no eviction during the stage
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


_running: set[subprocess.Popen[str]] = set()


def spawn(stage: str, mode: str, policy: Path, n: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--mode", mode, "--policy", str(policy),
           "--n", str(n)]
    env = dict(os.environ, PYTHONPATH=str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=C.ROOT, env=env)
    _running.add(p)
    try:
        out, err = p.communicate(timeout=1800)
    finally:
        _running.discard(p)
    if p.returncode != 0:
        raise SystemExit(f"bench error: stage {stage} ({mode}) failed with {p.returncode}:\n{err[-3000:]}{out[-1000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"bench error: stage {stage} ({mode}) printed no result:\n{out[-2000:]}")
    return orjson.loads(lines[-1])


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def mib(b: float) -> str:
    return f"{b / 1048576:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 sessions/callers instead of 100,000")
    ap.add_argument("--sessions", "--callers", dest="n", type=int, default=None,
                    help="N, the number of sessions and of callers (default 100,000, quick 10,000)")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs (RSS only)")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2,
                    help="child processes at a time (default: one per core)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("rss", "trace"), default="rss", help=argparse.SUPPRESS)
    ap.add_argument("--policy", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.mode, Path(a.policy), a.n)

    n = a.n or (10_000 if a.quick else 100_000)
    modes = ["rss"] if a.no_trace else ["rss", "trace"]
    print(f"memory (extauthz {C.revision()}, python {sys.version.split()[0]}): one fresh process per stage and "
          f"mode ({a.jobs} at a time); N = {n:,}; 1,000 tools from common.make_tools", flush=True)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="extauthz-bench-mem-") as tmpdir:
        policy = write_policy(Path(tmpdir), n)
        # Children run `--jobs` at a time: memory does not depend on who else is using the CPU.
        pool = ThreadPoolExecutor(max_workers=max(1, a.jobs))
        futures = {(key, mode): pool.submit(spawn, key, mode, policy, n) for key, *_ in STAGES for mode in modes}
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            for key, label, *_ in STAGES:
                for mode in modes:
                    r = results[(key, mode)] = futures[(key, mode)].result()
                    if mode == "rss":
                        print(f"  {label.replace('N ', f'{n:,} '):<52} RSS +{mib(r['rss_after'] - r['rss_before']):>6} MiB"
                              f"  ({r['seconds']:.1f}s)", flush=True)
        except (KeyboardInterrupt, SystemExit) as e:
            for f in futures.values():
                f.cancel()
            for p in list(_running):
                p.kill()
            pool.shutdown(wait=True)
            if isinstance(e, SystemExit):
                raise
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True)
    report(results, n, modes)
    return 0


def report(results: dict[tuple[str, str], dict[str, Any]], n: int, modes: list[str]) -> None:
    rows = []
    per: dict[str, float] = {}
    bare = results[("imports", "rss")]["rss_before"]
    for key, label, unit, *_ in STAGES:
        r = results[(key, "rss")]
        delta = r["rss_after"] - r["rss_before"]
        t = results.get((key, "trace"))
        count = 1000 if unit == "tool" else (n if unit else 1)
        marginal = ""
        if unit and r.get("rss_mid") is not None:
            marginal = f"{(r['rss_after'] - r['rss_mid']) / (count - count // 2):,.0f}"
        row = [label.replace("N ", f"{n:,} "), mib(r["rss_after"]), f"+{mib(delta)}",
               f"{delta / count:,.0f}" if unit else "", marginal or ("-" if unit else ""),
               f"+{mib(t['traced'])}" if t else "-",
               f"{t['traced'] / count:,.0f}" if t and unit else ("" if t else "-"), unit]
        rows.append(row)
        per[key] = delta / count if unit else delta
    print()
    print(f"bare interpreter (+ orjson, bench helpers): {mib(bare)} MiB RSS")
    print(C.table(["stage", "RSS MiB", "RSS delta MiB", "RSS B/item", "2nd half B/item", "py heap delta MiB",
                   "py heap B/item", "item"], rows))
    print("  RSS: VmRSS after the stage; each stage runs in its own process, built up to the stage before it, with")
    print("  gc.collect() before every reading. RSS B/item = RSS delta / items; 2nd half B/item = RSS growth over the")
    print("  second half of the items only (memory freed by earlier stages is reused first, which flatters the")
    print("  average). py heap: tracemalloc of the Python objects the stage left behind (jsonschema_rs validators")
    print("  live in Rust's heap and allocator slack is not an object: both show in RSS only). The callers stages go")
    print("  through to_http_request(CheckRequest) like the servicer, so its claims cache is counted.")
    if "trace" in modes:
        print()
        for key, label, unit, *_ in STAGES:
            t = results.get((key, "trace"))
            if not t or not unit:
                continue
            count = 1000 if unit == "tool" else n
            sites = ", ".join(f"{s[0]} {s[1] / count:,.0f} B" for s in t["sites"][:5])
            print(f"  py heap per {unit}, {label.replace('N ', f'{n:,} ')}: {sites}")
    r = results[("callers", "rss")]
    callers_marginal = (r["rss_after"] - r["rss_mid"]) / (n - n // 2) if r.get("rss_mid") is not None else float("nan")
    tools_total = (results[("tools", "rss")]["rss_after"] - results[("tools", "rss")]["rss_before"]
                   + results[("validators", "rss")]["rss_after"] - results[("validators", "rss")]["rss_before"])
    print(f"SUMMARY memory: policy loaded {mib(results[('policy', 'rss')]['rss_after'])} MiB RSS; per tool "
          f"{per['tools']:,.0f} B learned + {per['validators']:,.0f} B validator (1,000 tools {mib(tools_total)} MiB); "
          f"per session {per['sessions_check']:,.0f} B via App.check ({n:,}: {mib(per['sessions_check'] * n)} MiB; "
          f"registry alone {per['sessions_touch']:,.0f} B); per caller without a session {callers_marginal:,.0f} B "
          f"marginal (bounded caches: +{mib(per['callers'] * n)} MiB for {n:,}), with its own session "
          f"{per['callers_sessions']:,.0f} B")


if __name__ == "__main__":
    sys.exit(main())
