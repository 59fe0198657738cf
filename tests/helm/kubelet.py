"""Run a rendered Deployment's container the way kubelet would, as a local `extauthz` process: its
volumes written to a scratch root (ConfigMap/Secret items as files), its env resolved from the
given Secrets, `$(VAR)` in args expanded from that env, mount paths and ports mapped onto this
machine. What the chart gets wrong (a missing key, a path nothing mounts, a flag the CLI refuses)
shows up as a process that does not start or never becomes ready."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.demo.stack import free_port

from .conftest import Rendered

Secrets = dict[str, dict[str, str | bytes]]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Pod:
    proc: subprocess.Popen[bytes]
    admin: str                 # http://127.0.0.1:PORT
    grpc_port: int
    args: list[str]
    env: dict[str, str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _write(directory: Path, files: dict[str, str | bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data.encode() if isinstance(data, str) else data)


def _volume_files(vol: dict[str, Any], r: Rendered, secrets: Secrets) -> dict[str, str | bytes]:
    if "configMap" in vol:
        return dict(r.one("ConfigMap", vol["configMap"]["name"])["data"])
    if "secret" in vol:
        data = secrets[vol["secret"]["secretName"]]           # KeyError: kubelet would not start the pod
        items = vol["secret"].get("items")
        return {i["path"]: data[i["key"]] for i in items} if items else dict(data)
    assert "emptyDir" in vol, vol
    return {}


def start(r: Rendered, root: Path, secrets: Secrets | None = None) -> Pod:
    secrets = secrets or {}
    spec = r.one("Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for m in c["volumeMounts"]:
        assert "subPath" not in m
        local = root / m["mountPath"].lstrip("/")
        _write(local, _volume_files(volumes[m["name"]], r, secrets))
        mounts[m["mountPath"]] = local

    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            raw = secrets[ref["name"]][ref["key"]]
            env[e["name"]] = raw.decode() if isinstance(raw, bytes) else raw

    grpc_port, admin_port = free_port(), free_port()
    args: list[str] = []
    for a in c["args"]:
        a = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), a)
        for path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):   # the deepest mount wins
            if a == path or a.startswith(path + "/"):
                a = str(local) + a[len(path):]
                break
        args.append(a)
    for flag, value in (("--grpc-port", grpc_port), ("--admin-port", admin_port), ("--host", "127.0.0.1")):
        args[args.index(flag) + 1] = str(value)

    base = {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}
    log = root / "pod.log"
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", *args], env={**base, **env},
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    return Pod(proc, f"http://127.0.0.1:{admin_port}", grpc_port, args, env, log)
