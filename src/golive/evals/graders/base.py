"""What every grader takes and gives.

A grade is three-way: a score in [0, 1], or not measured (score None) with the
reason, e.g. a judge whose answer could not be parsed. Not-measured grades are
reported and counted but never averaged in as zeros.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Grade:
    score: float | None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grade:
        return cls(d["score"], d.get("reason", ""), d.get("detail") or {})


@dataclass(slots=True)
class GradeInput:
    output: str
    expected: Any
    inputs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)  # the prompt that was sent
    other: str | None = None  # pairwise: the output compared against


class Chat(Protocol):
    """How model-based graders reach a model (cached, costed; see runner.ModelCaller)."""

    async def __call__(self, base_url: str, api_key_env: str | None, model: str,
                       messages: list[dict[str, str]], params: dict[str, Any]) -> str: ...


class Grader(abc.ABC):
    """Base class: `spec` is the validated grader entry of the eval file."""

    # Worth a cache lookup: slow (model calls, neural nets), deterministic per key.
    cacheable = False

    def __init__(self, spec: Any):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.label

    def cache_identity(self) -> dict[str, Any]:
        """Everything that changes this grader's verdict (goes into the cache key)."""
        return self.spec.model_dump(mode="json", exclude={"name", "weight", "threshold",
                                                          "min_mean"})

    @abc.abstractmethod
    async def grade(self, x: GradeInput, chat: Chat) -> Grade:
        """Grade one output; model-based graders reach their judge through `chat`."""


class SyncGrader(Grader):
    """A grader that calls no model: plain Python in `grade_sync`."""

    async def grade(self, x: GradeInput, chat: Chat) -> Grade:
        return self.grade_sync(x)

    @abc.abstractmethod
    def grade_sync(self, x: GradeInput) -> Grade:
        """Grade one output."""
