"""Fallback load generator when h2load is missing: one process of a multi-process grpc.aio client.

Sends the same serialized CheckRequest (raw bytes, no client-side protobuf work) on `--streams`
concurrent coroutines over one channel for `--warmup` + `--duration` seconds, and prints one JSON
line: {"ok": n, "failed": n, "elapsed": s, "lat_us": [...]} for the measured part only.
check_throughput.py starts several of these and merges them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import grpc
import orjson

METHOD = "/envoy.service.auth.v3.Authorization/Check"


async def run(target: str, payload: bytes, streams: int, warmup: float, duration: float) -> dict:
    lat: list[int] = []
    ok = failed = 0
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(METHOD)                     # no serializers: bytes in, bytes out
        await call(payload, timeout=10)
        t_start = time.monotonic() + warmup
        t_end = t_start + duration

        async def worker() -> None:
            nonlocal ok, failed
            clock = time.perf_counter_ns
            while True:
                now = time.monotonic()
                if now >= t_end:
                    return
                t0 = clock()
                try:
                    await call(payload, timeout=10)
                    good = True
                except grpc.aio.AioRpcError:
                    good = False
                if now >= t_start:
                    lat.append((clock() - t0) // 1000)
                    if good:
                        ok += 1
                    else:
                        failed += 1

        await asyncio.gather(*(worker() for _ in range(streams)))
    return {"ok": ok, "failed": failed, "elapsed": duration, "lat_us": lat}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--payload", required=True, help="file with one serialized CheckRequest (no framing)")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    with open(a.payload, "rb") as f:
        payload = f.read()
    out = asyncio.run(run(a.target, payload, a.streams, a.warmup, a.duration))
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
