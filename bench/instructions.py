"""Instructions per App.check, counted by callgrind: the decision-core comparison that holds on a
shared, noisy machine (wall-clock time here moves by ±30% between runs; the count by about 1%).

    python bench/instructions.py [--vs OTHER_CHECKOUT] [--kinds list,small_call,denied] [-n 1000]

Each kind runs in its own `valgrind --tool=callgrind` process: `decision_core.py`'s app and
requests (1,000 learned tools), warm-up, `extauthz.server.settle`, then instrumentation is
switched on for N Checks inside a running event loop and off again, and the instructions are
divided by N. With --vs, the same for another checkout (e.g. a `git worktree` of an older commit),
printed side by side. Needs valgrind (apt-get install valgrind). PYTHONHASHSEED is fixed so both
sides hash alike.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(key: str, n: int) -> None:
    """Runs inside valgrind, in the checkout being measured (its bench/ and extauthz/)."""
    import asyncio
    import io

    sys.path.insert(0, str(Path.cwd() / "bench"))
    import common as C  # type: ignore[import-not-found]
    import decision_core as D  # type: ignore[import-not-found]

    from extauthz.server import settle

    tools = C.make_tools()
    app = D.make_app(tools, io.BytesIO())
    kind = next(k for k in D.build_kinds(tools) if k.key == key)
    calls = D.prepare(kind, app)

    def toggle(state: str) -> None:
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)

    async def run() -> None:
        m = len(calls)
        for i in range(max(200, 3 * m)):
            calls[i % m]()
        app.record_pending()
        settle(app)
        for i in range(50):
            calls[i % m]()
        toggle("on")
        for i in range(n):
            calls[i % m]()
        toggle("off")
    asyncio.run(run())


def count(checkout: Path, key: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(checkout)}
        proc = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                               sys.executable, str(Path(__file__).resolve()), "--child", key, "-n", str(n)],
                              cwd=checkout, env=env, capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or m is None:
            raise SystemExit(f"{checkout}: {key}: callgrind run failed:\n{proc.stderr[-2000:]}")
        return int(m.group(1)) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vs", type=Path, help="another checkout to count beside this one")
    ap.add_argument("--kinds", default="list,small_call,denied")
    ap.add_argument("-n", type=int, default=1000, help="Checks counted per kind")
    ap.add_argument("--child", metavar="KIND", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.n)
        return 0
    here = HERE.parent
    sides = [("this", here)] + ([("vs", a.vs.resolve())] if a.vs else [])
    print(f"instructions per App.check (callgrind, {a.n} Checks after warm-up)")
    print("  " + " | ".join(f"{name}: {path} ({_rev(path)})" for name, path in sides))
    for key in a.kinds.split(","):
        t0 = time.monotonic()
        got = [count(path, key, a.n) for _, path in sides]
        line = f"  {key:<12} " + "  ".join(f"{v / 1000:8.1f}k" for v in got)
        if len(got) == 2:
            line += f"   this/vs {got[0] / got[1] - 1:+.1%}"
        print(line + f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    return 0


def _rev(path: Path) -> str:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
