"""The outcome of one validation check: passed, failed or skipped, with what was found and the figures measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class CheckResult:
    name: str
    status: str = PASSED
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why it was skipped

    def fail(self, problem: str) -> None:
        self.status = FAILED
        self.problems.append(problem)

    @classmethod
    def skipped(cls, name: str, reason: str) -> "CheckResult":
        return cls(name=name, status=SKIPPED, reason=reason)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        out["problems"] = list(self.problems)
        out.update(self.details)
        return out
