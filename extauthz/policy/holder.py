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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import PolicyError
from .load import read_policy_bytes, resolve_policy_path
from .model import Policy, policy_from_bytes

log = logging.getLogger("extauthz.policy")

ReloadResult = Literal["ok", "error"]
Signature = tuple[str, int, str]        # (realpath, mtime_ns, sha256 of content)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The result of reading (and, if changed, parsing) the file, before anything is swapped."""

    signature: Signature
    target: str = ""
    policy: Policy | None = None
    error: PolicyError | None = None


class PolicyHolder:
    """The one place the service reads its policy from; `policy` is None until a load succeeds.

    `on_reload("ok" | "error")` is the metrics hook. `watch` parses on a worker thread but swaps
    and calls the hook on the event-loop thread, so the hook may touch loop-owned state.
    """

    def __init__(self, path: str, on_reload: Callable[[ReloadResult], None] | None = None,
                 policy: Policy | None = None) -> None:
        self.path = path
        self.on_reload = on_reload
        self._policy = policy
        self._seen: Signature | None = None      # last content we tried, good or bad
        self._lock = threading.Lock()            # serialises swaps; readers never wait

    @property
    def policy(self) -> Policy | None:
        return self._policy

    @property
    def ready(self) -> bool:
        return self._policy is not None

    def reload(self) -> bool:
        """Load the file now; install it if valid. A bad edit is logged and the old policy kept."""
        attempt = self._prepare(force=True)
        assert attempt is not None
        return self._commit(attempt, force=True)

    def poll(self) -> bool | None:
        """Reload if the resolved file or its content changed: True/False as `reload`, None if unchanged."""
        attempt = self._prepare(force=False)
        return None if attempt is None else self._commit(attempt, force=False)

    async def watch(self, interval: float = 0.25) -> None:
        """Poll for changes until cancelled; never raises (cancellation aside)."""
        while True:
            try:
                attempt = await asyncio.to_thread(self._prepare, False)
                if attempt is not None:
                    self._commit(attempt, force=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("policy watcher: unexpected error (keeping current policy)")
            await asyncio.sleep(interval)

    def _prepare(self, force: bool) -> _Attempt | None:
        """Read, hash and (when new or forced) parse. Touches no shared state: thread-safe."""
        try:
            target = resolve_policy_path(self.path)
            real = os.path.realpath(target)
            try:
                mtime = os.stat(real).st_mtime_ns
            except OSError:
                mtime = 0
            data = read_policy_bytes(real)
        except PolicyError as exc:
            signature: Signature = ("unreadable", 0, str(exc))
            if not force and signature == self._seen:
                return None
            return _Attempt(signature, error=exc)
        signature = (real, mtime, hashlib.sha256(data).hexdigest())
        if not force and signature == self._seen:
            return None
        try:
            policy = policy_from_bytes(data, target, os.path.dirname(os.path.abspath(target)))
        except PolicyError as exc:
            return _Attempt(signature, target, error=exc)
        return _Attempt(signature, target, policy=policy)

    def _commit(self, attempt: _Attempt, force: bool) -> bool:
        with self._lock:
            if not force and attempt.signature == self._seen:
                return False          # another caller already handled this content
            self._seen = attempt.signature
            old = self._policy
            if attempt.policy is not None:
                self._policy = attempt.policy
        # Logging and the hook run outside the lock: the hook may call back into the holder.
        if attempt.policy is None:
            self._report(attempt.error or PolicyError([]))
            return False
        policy = attempt.policy
        log.info("policy loaded from %s (digest %s, %d servers, %d rules)%s", attempt.target,
                 policy.digest[:12], len(policy.servers), policy.rule_count,
                 " (unchanged)" if old is not None and old.digest == policy.digest else "")
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
