"""Risk scoring on the calibration traces (tests/corpus/risk, bench/risk_calibration.py): honest
agents over hours are never blocked or alerted on; every attack script is blocked within its
budget of requests. Each trace goes through App.check (sessions, RiskEngine) with simulated time."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "corpus" / "risk"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


def _bench(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


calibration = _bench("risk_calibration")
traces = _bench("risk_traces")


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return {r.name: r for r in calibration.calibrate(CORPUS)}


BENIGN = [t["file"].removesuffix(".jsonl") for t in MANIFEST["traces"] if t["kind"] == "benign"]
ATTACKS = [t["file"].removesuffix(".jsonl") for t in MANIFEST["traces"] if t["kind"] == "attack"]


def test_the_corpus_has_hours_of_benign_work_and_every_attack_class():
    assert set(BENIGN) == {"crm_support", "coding_agent", "data_analyst"}
    assert set(ATTACKS) == {"recon_probe_extract", "slow_probe", "session_theft", "schema_fuzzing",
                            "cross_server_recon", "id_enumeration"}
    hours = {t["file"]: t["hours"] for t in MANIFEST["traces"]}
    assert all(hours[f"{b}.jsonl"] >= 4 for b in BENIGN)
    assert hours["slow_probe.jsonl"] >= 3                       # spread over hours, not a burst


@pytest.mark.parametrize("name", BENIGN)
def test_benign_workload_is_never_blocked_or_alerted(results, name):
    r = results[name]
    a = r.actor
    assert a.requests > 100
    assert not a.blocked and a.alerts == 0, (a.max_score, a.first_block_step)
    assert "risk_blocked" not in a.denied
    assert a.max_score < 50                                     # far from blockAt 100


@pytest.mark.parametrize("name", BENIGN)
def test_benign_workloads_make_and_correct_mistakes(results, name):
    """The traces are honest work, not clean work: denials happen, and corrected ones are forgiven."""
    a = results[name].actor
    mistakes = a.denied["schema_violation"] + a.denied["payload_too_large"]
    assert mistakes >= 3
    assert a.forgiven >= 2


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_blocked_within_its_budget(results, name):
    r = results[name]
    a = r.actor
    assert a.blocked, (a.max_score, dict(a.denied))
    assert a.first_block_step <= r.block_within
    assert a.denied["risk_blocked"] >= 1


def test_the_session_thiefs_victim_is_never_blocked(results):
    (victim,) = results["session_theft"].bystanders
    assert victim.requests > 20 and not victim.blocked and victim.alerts == 0 and victim.max_score == 0


def test_chains_are_detected_in_slow_and_cross_server_attacks(results):
    assert results["slow_probe"].actor.alerts >= 1
    assert results["cross_server_recon"].actor.alerts >= 1


def test_precision_and_recall_are_printed(results):
    text = calibration.report(list(results.values()))
    assert "blocked: precision 6/6 = 1.00, recall 6/6 = 1.00" in text
    assert "benign_blocks=0 benign_alerts=0" in text


def test_committed_traces_are_what_the_seeded_generator_makes(tmp_path):
    traces.generate(tmp_path, MANIFEST["seed"])
    for t in MANIFEST["traces"]:
        assert (tmp_path / t["file"]).read_bytes() == (CORPUS / t["file"]).read_bytes(), t["file"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST
