"""Policy errors: every problem in a policy file, each with the place a human should look."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem: `location` is `file:line:col json.path`, so an editor can jump to it."""

    location: str
    message: str
    line: int = 0          # 1-based; 0 when unknown (used only for sorting)
    column: int = 0

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class PolicyError(Exception):
    """A policy that must not be used. Carries every issue found, not only the first."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues: list[PolicyIssue] = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)
