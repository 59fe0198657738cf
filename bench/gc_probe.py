"""Start `extauthz` with a hook that times its gen1/gen2 collections (a bench probe, not shipped).

    python bench/gc_probe.py serve --policy ...      # exactly `python -m extauthz.cli serve ...`, plus:
    BENCH_HIDE_MODULES=hiredis python bench/gc_probe.py --run bench/shared_state.py --quick
                                                     # another bench script, with modules hidden, no GC log

* one stderr line per gen1/gen2 collection, `extauthz-bench-gc gen<N> <ms> ms` (gen0 returns at
  once: it runs too often to log, and the service paces it itself); `gc_pauses` reads them back;
* with `BENCH_HIDE_MODULES=hiredis` (comma-separated names), those modules cannot be imported, so
  redis-py falls back to its pure-Python reply parser; with that or `--redis`, the launcher writes
  which parser redis-py chose to stderr (`extauthz-bench-redis-parser hiredis=True|False`), which
  the bench checks in the log.
"""

from __future__ import annotations

import gc
import importlib.abc
import os
import re
import runpy
import sys
import time
from pathlib import Path
from typing import Any

HIDE_ENV = "BENCH_HIDE_MODULES"
PARSER_LINE = b"extauthz-bench-redis-parser"


class _Hide(importlib.abc.MetaPathFinder):
    """Makes `import name` (and its submodules) fail as if the package were not installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by bench/gc_probe.py)", name=fullname)


_start = [0.0]


def _gc(phase: str, info: dict[str, int], _pc: Any = time.perf_counter, _w: Any = sys.stderr.write) -> None:
    if info["generation"] == 0:
        return
    if phase == "start":
        _start[0] = _pc()
    else:
        _w(f"extauthz-bench-gc gen{info['generation']} {(_pc() - _start[0]) * 1e3:.3f} ms\n")


def gc_pauses(log: Path, offset: int) -> tuple[dict[int, list[float]], int]:
    """{generation: [pause ms]} the service logged since `offset`, and the new offset."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return {}, offset
    out: dict[int, list[float]] = {}
    for m in re.finditer(rb"extauthz-bench-gc gen(\d) ([\d.]+) ms", data):
        out.setdefault(int(m.group(1)), []).append(float(m.group(2)))
    return out, offset + len(data)


def main() -> int:
    # Run as a script, bench/ is sys.path[0]: its common.py, sessions.py, memory.py ... must not
    # shadow anything the service imports (another bench script gets it back).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    script = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--run" else None
    hidden = {n.strip() for n in os.environ.get(HIDE_ENV, "").split(",") if n.strip()}
    if hidden:
        sys.meta_path.insert(0, _Hide(hidden))
    if hidden or "--redis" in sys.argv:
        import redis.utils  # what redis-py decided: its C parser only when hiredis imports
        sys.stderr.write(f"{PARSER_LINE.decode()} hiredis={redis.utils.HIREDIS_AVAILABLE} "
                         f"hidden={','.join(sorted(hidden)) or '-'}\n")
        if "hiredis" in hidden and redis.utils.HIREDIS_AVAILABLE:
            raise SystemExit("bench error: hiredis still importable")
    if script is not None:
        sys.argv[:] = sys.argv[2:]
        sys.path.insert(0, str(Path(script).resolve().parent))
        runpy.run_path(script, run_name="__main__")
        return 0
    gc.callbacks.append(_gc)
    sys.argv[0] = "extauthz"
    from extauthz.cli import main as cli_main
    return int(cli_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
