"""`extauthz check-policy PATH`: validate before you apply (CI, pre-commit, kubectl diff)."""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import PolicyError
from .model import load_policy


def check_policy_main(path: str, out: TextIO = sys.stdout) -> int:
    """Print `OK: ...` and return 0, or print each issue on its own line and return 1."""
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for issue in exc.issues:
            print(issue, file=out)
        return 1
    print(f"OK: {path} ({len(policy.servers)} servers, {policy.rule_count} rules)", file=out)
    return 0
