"""Run every benchmark, one after the other (never in parallel: they would measure each other).

    python bench/run_all.py [--quick] [--only decision_core|check_throughput|through_envoy|memory]

Each script prints its own table and one `SUMMARY ...` line; the summaries are repeated at the end.
Exit status is non-zero when any benchmark failed (a setup error, a server that would not start,
a request that was not decided as expected). Numbers are never asserted: they are for reading.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("decision_core", "check_throughput", "through_envoy", "memory")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    ap = argparse.ArgumentParser(description="run the extauthz benchmarks")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test: numbers are rougher)")
    ap.add_argument("--only", choices=BENCHES, action="append", help="run only this benchmark (repeatable)")
    a = ap.parse_args(argv)
    summaries: list[str] = []
    failed: list[str] = []
    for name in a.only or BENCHES:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if a.quick else [])
        print(f"=== {name} ({' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))})", flush=True)
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        assert p.stdout is not None
        try:
            for line in p.stdout:
                print(line, end="", flush=True)
                if line.startswith("SUMMARY "):
                    summaries.append(line.strip())
            rc = p.wait()
        except KeyboardInterrupt:
            p.terminate()               # the child stops its own servers on SIGTERM
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
            print("interrupted", file=sys.stderr)
            return 130
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.monotonic() - t0:.0f}s\n",
              flush=True)
        if rc != 0:
            failed.append(name)
    print("=== summaries")
    for s in summaries:
        print(s)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
