"""Hot reload with the real Kubernetes ConfigMap layout (`..data` symlink swapped atomically)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

import pytest

from extauthz.policy.holder import PolicyHolder
from tests.unit.policy.policy_helpers import policy_yaml

GOOD = policy_yaml("mode: enforce\nservers: [{name: crm, match: {authority: a}}]\n")
GOOD_MONITOR = policy_yaml("mode: monitor\nservers: [{name: crm, match: {authority: a}}]\n")
BROKEN = policy_yaml("mode: enforce\nservers: [{name: crm, match: {authority: a}}]\ndefaults: {oops: 1}\n")


class ConfigMapDir:
    """Mimics kubelet's AtomicWriter: timestamped dir, `..data` symlink, per-key symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        self.mtime_ns: int | None = None

    def publish(self, text: str, keep_mtime: bool = True) -> None:
        self.generation += 1
        stamp = self.root / f"..2026_01_01_00_00_{self.generation:02d}.000000001"
        stamp.mkdir()
        target = stamp / "policy.yaml"
        target.write_text(text)
        if keep_mtime and self.mtime_ns is not None:   # the file's mtime alone must not be relied on
            os.utime(target, ns=(self.mtime_ns, self.mtime_ns))
        self.mtime_ns = target.stat().st_mtime_ns
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.replace(tmp, self.root / "..data")             # the atomic swap
        if not (self.root / "policy.yaml").is_symlink():
            (self.root / "policy.yaml").symlink_to("..data/policy.yaml")
        if old:
            (self.root / old / "policy.yaml").unlink()
            (self.root / old).rmdir()


@pytest.fixture
def configmap(tmp_path: Path) -> ConfigMapDir:
    cm = ConfigMapDir(tmp_path)
    cm.publish(GOOD)
    return cm


@pytest.mark.parametrize("as_dir", [True, False], ids=["directory", "symlinked-file"])
def test_configmap_swap_is_picked_up(configmap: ConfigMapDir, as_dir: bool) -> None:
    results: list[str] = []
    path = str(configmap.root) if as_dir else str(configmap.root / "policy.yaml")
    holder = PolicyHolder(path, on_reload=results.append)
    assert not holder.ready and holder.poll() is True and holder.ready
    assert holder.policy.mode == "enforce"
    assert holder.poll() is None                        # nothing changed: no reload
    configmap.publish(GOOD_MONITOR)
    assert holder.poll() is True
    assert holder.policy.monitor
    assert results == ["ok", "ok"]


def test_broken_edit_keeps_last_good_and_reports_error(configmap: ConfigMapDir, caplog) -> None:
    results: list[str] = []
    holder = PolicyHolder(str(configmap.root), on_reload=results.append)
    assert holder.reload() is True
    good = holder.policy
    configmap.publish(BROKEN)
    with caplog.at_level(logging.ERROR, logger="extauthz.policy"):
        assert holder.poll() is False
    assert holder.policy is good
    assert results == ["ok", "error"]
    assert any("defaults.oops" in r.getMessage() and ":5:" in r.getMessage() for r in caplog.records)
    assert holder.poll() is None                        # the same bad content is not retried
    assert holder.reload() is False and holder.policy is good
    configmap.publish(GOOD_MONITOR)
    assert holder.poll() is True and holder.policy.monitor
    assert results == ["ok", "error", "error", "ok"]


def test_in_place_edit_with_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(str(path))
    assert holder.poll() is True
    stat = path.stat()
    edited = GOOD.replace("mode: enforce", "mode: monitor")
    assert len(edited) == len(GOOD)                     # same size: only the hash can tell
    path.write_text(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert holder.poll() is True and holder.policy.monitor


def test_missing_file_reports_once_then_loads(tmp_path: Path) -> None:
    results: list[str] = []
    path = tmp_path / "policy.yaml"
    holder = PolicyHolder(str(path), on_reload=results.append)
    assert holder.poll() is False and holder.policy is None
    assert holder.poll() is None                        # still missing: reported once, not every poll
    assert results == ["error"]
    path.write_text(GOOD)
    assert holder.poll() is True and results == ["error", "ok"]


def test_callback_failure_does_not_break_reload(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)

    def boom(result: str) -> None:
        raise RuntimeError("metrics down")

    holder = PolicyHolder(str(path), on_reload=boom)
    assert holder.reload() is True and holder.ready


async def test_watch_follows_swaps_and_survives_bad_edits(configmap: ConfigMapDir) -> None:
    results: list[str] = []
    threads: set[int] = set()

    def hook(result: str) -> None:
        results.append(result)
        threads.add(threading.get_ident())

    holder = PolicyHolder(str(configmap.root), on_reload=hook)
    task = asyncio.create_task(holder.watch(interval=0.01))

    async def until(condition) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out; results={results}")

    try:
        await until(lambda: holder.ready)
        good = holder.policy
        configmap.publish(BROKEN)
        await until(lambda: "error" in results)
        assert holder.policy is good
        configmap.publish(GOOD_MONITOR)
        await until(lambda: holder.policy is not None and holder.policy.monitor)
        (configmap.root / "..data").unlink()           # even a vanished mount must not kill it
        await until(lambda: results.count("error") >= 2)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert results[0] == "ok" and holder.policy.monitor
    assert threads == {threading.get_ident()}           # swaps and hooks happen on the loop thread
