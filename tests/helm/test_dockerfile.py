"""The Dockerfile cannot be built here (no docker), so check what the chart relies on: the user id,
the entry point and default policy path, the exposed ports, and a build context that keeps out
what the image must not contain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)                     # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def last(instructions: list[tuple[str, str]], word: str) -> str:
    return [rest for w, rest in instructions if w == word][-1]


def test_multi_stage_on_python_311_slim(instructions: list[tuple[str, str]]) -> None:
    froms = [rest for w, rest in instructions if w == "FROM"]
    assert len(froms) >= 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in [f"{w} {r}" for w, r in instructions]
    assert froms[-1] == "${PYTHON_IMAGE}"
    assert "COPY --from=build /opt/venv /opt/venv" in [f"{w} {r}" for w, r in instructions]


def test_runs_as_the_charts_non_root_user(instructions: list[tuple[str, str]]) -> None:
    values = yaml.safe_load((ROOT / "helm/mcp-extauthz/values.yaml").read_text(encoding="utf-8"))
    assert "ARG UID=10001" in [f"{w} {r}" for w, r in instructions]
    assert last(instructions, "USER") == "${UID}:${UID}"
    assert values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"] == 10001


def test_entrypoint_and_default_policy_path(instructions: list[tuple[str, str]]) -> None:
    assert json.loads(last(instructions, "ENTRYPOINT")) == ["extauthz"]
    assert json.loads(last(instructions, "CMD")) == ["serve", "--policy", "/etc/extauthz/policy"]
    assert last(instructions, "EXPOSE").split() == ["9191", "9192"]
    assert not any(w == "HEALTHCHECK" for w, _ in instructions)


def test_installs_the_package_without_extras(instructions: list[tuple[str, str]]) -> None:
    runs = " ".join(rest for w, rest in instructions if w == "RUN")
    assert "pip install /wheels/*.whl" in runs
    assert "[" not in runs.split("pip install", 1)[1]        # no `.[demo]` / `.[test]`


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "helm", "bench"} <= ignored
    for needed in ("pyproject.toml", "README.md", "extauthz"):
        assert needed not in ignored
