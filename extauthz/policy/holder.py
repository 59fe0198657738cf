"""Hot reload: hold the current Policy, swap it atomically, keep the last good one on a bad edit.

Kubernetes mounts a ConfigMap as `policy.yaml -> ..data/policy.yaml` with `..data -> ..<ts>`
and updates it by swapping the `..data` symlink; the file's own mtime may not change and
inotify on the file misses it. Polling the resolved path, mtime and content hash catches that
swap, plain in-place edits and editors that replace the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from typing import Callable, Literal

from .errors import PolicyError
from .load import read_policy_bytes, resolve_policy_path
from .model import Policy, policy_from_bytes

log = logging.getLogger("extauthz.policy")

ReloadResult = Literal["ok", "error"]
Signature = tuple[str, int, str]        # (realpath, mtime_ns, sha256 of content)


class PolicyHolder:
    """The one place the service reads its policy from; `policy` is None until a load succeeds.

    `on_reload("ok" | "error")` is the metrics hook; it may run on a worker thread.
    """

    def __init__(self, path: str, on_reload: Callable[[ReloadResult], None] | None = None,
                 policy: Policy | None = None) -> None:
        self.path = path
        self.on_reload = on_reload
        self._policy = policy
        self._seen: Signature | None = None      # last content we tried, good or bad
        self._lock = threading.Lock()            # one reload at a time; readers never wait

    @property
    def policy(self) -> Policy | None:
        return self._policy

    @property
    def ready(self) -> bool:
        return self._policy is not None

    def reload(self) -> bool:
        """Load the file now; install it if valid. A bad edit is logged and the old policy kept."""
        with self._lock:
            try:
                target = resolve_policy_path(self.path)
                data, signature = self._read(target)
            except PolicyError as exc:
                self._report(exc)
                return False
            return self._install(target, data, signature)

    async def watch(self, interval: float = 0.25) -> None:
        """Poll for changes until cancelled; never raises (cancellation aside)."""
        while True:
            try:
                await asyncio.to_thread(self.poll)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("policy watcher: unexpected error (keeping current policy)")
            await asyncio.sleep(interval)

    def poll(self) -> bool | None:
        """Reload if the resolved file or its content changed: True/False as `reload`, None if unchanged."""
        with self._lock:
            try:
                target = resolve_policy_path(self.path)
                data, signature = self._read(target)
            except PolicyError as exc:
                if self._seen != ("missing", 0, str(exc)):
                    self._seen = ("missing", 0, str(exc))
                    self._report(exc)
                return False
            if signature == self._seen:
                return None
            return self._install(target, data, signature)

    @staticmethod
    def _read(target: str) -> tuple[bytes, Signature]:
        real = os.path.realpath(target)
        try:
            mtime = os.stat(real).st_mtime_ns
        except OSError:
            mtime = 0
        data = read_policy_bytes(real)
        return data, (real, mtime, hashlib.sha256(data).hexdigest())

    def _install(self, target: str, data: bytes, signature: Signature) -> bool:
        self._seen = signature
        try:
            policy = policy_from_bytes(data, target, os.path.dirname(os.path.abspath(target)))
        except PolicyError as exc:
            self._report(exc)
            return False
        old, self._policy = self._policy, policy
        log.info("policy loaded from %s (digest %s, %d servers, %d rules)%s", target, policy.digest[:12],
                 len(policy.servers), policy.rule_count,
                 "" if old is None or old.digest != policy.digest else " (unchanged)")
        self._notify("ok")
        return True

    def _report(self, exc: PolicyError) -> None:
        kept = "keeping the last good policy" if self._policy is not None else "no policy loaded yet"
        log.error("policy reload failed (%s): %d issue(s)", kept, len(exc.issues))
        for issue in exc.issues:
            log.error("  %s", issue)
        self._notify("error")

    def _notify(self, result: ReloadResult) -> None:
        if self.on_reload is not None:
            try:
                self.on_reload(result)
            except Exception:  # noqa: BLE001 - a metrics hook must not break reloads
                log.exception("policy on_reload callback failed")
