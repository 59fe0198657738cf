"""CPU pinning of the through-Envoy benches' processes (`--pin`): which role runs on which core."""

from __future__ import annotations

import os
import shutil

ROLES = ("load", "upstream", "envoy", "service")


def layout(spec: str) -> dict[str, int | None]:
    """`--pin` to {role: core}: 'none', 'auto' (with >= 2 cores: load generator, upstream and service on
    the first core, both Envoys on the last), or role=core pairs, e.g. 'load=0,upstream=0,service=0,envoy=1'.

    Measured on 2 cores at 1,000/s: Envoy and the service on one core saturate it (B's p50 goes to
    tens of ms); the other splits measured the same as no pinning within the run-to-run noise."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if spec == "none" or not shutil.which("taskset") or len(cores) < 2:
        return {r: None for r in ROLES}
    if spec == "auto":
        first, last = cores[0], cores[-1]
        return {"load": first, "upstream": first, "service": first, "envoy": last}
    out: dict[str, int | None] = {r: None for r in ROLES}
    for part in spec.split(","):
        role, _, core = part.partition("=")
        if role.strip() not in out or not core.strip().isdigit():
            raise SystemExit(f"--pin: cannot read {part!r} (roles: {', '.join(ROLES)})")
        out[role.strip()] = int(core)
    return out


def pin_note(pins: dict[str, int | None]) -> str:
    if all(v is None for v in pins.values()):
        return "no CPU pinning"
    by_core: dict[int | None, list[str]] = {}
    for r, c in pins.items():
        by_core.setdefault(c, []).append(r)
    return "pinned: " + "; ".join(f"{'+'.join(rs)} on core {c}" if c is not None else f"{'+'.join(rs)} unpinned"
                                  for c, rs in sorted(by_core.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def prefix(pins: dict[str, int | None], role: str) -> list[str]:
    c = pins[role]
    return [shutil.which("taskset") or "taskset", "-c", str(c)] if c is not None else []
