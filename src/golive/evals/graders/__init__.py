"""Graders: each turns (output, expected, inputs) into a score in [0, 1] or "not measured"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive.evals import spec as S
from golive.evals.graders.base import Grade, GradeInput, Grader

__all__ = ["Grade", "GradeInput", "Grader", "build_grader"]


def build_grader(g: Any, base_dir: Path, judge_base_url: str, judge_model: str) -> Grader:
    """The grader for one validated `graders:` entry; heavy libraries load lazily."""
    from golive.evals.graders import text

    simple = {S.EqualsGrader: text.EqualsGrader, S.ContainsGrader: text.ContainsGrader,
              S.RegexGrader: text.RegexGrader, S.JsonValidGrader: text.JsonValidGrader,
              S.NumericGrader: text.NumericGrader}
    if type(g) in simple:
        return simple[type(g)](g)
    if isinstance(g, S.JsonSchemaGrader):
        return text.JsonSchemaGrader(g, base_dir)
    if isinstance(g, S.RougeGrader):
        from golive.evals.graders.rouge import RougeGrader

        return RougeGrader(g)
    if isinstance(g, S.BertScoreGrader | S.EmbeddingGrader):
        from golive.evals.graders import semantic

        cls = semantic.BertScoreGrader if isinstance(g, S.BertScoreGrader) else \
            semantic.EmbeddingGrader
        return cls(g)
    if isinstance(g, S.JudgeGrader | S.PairwiseGrader):
        from golive.evals.graders import judge

        cls = judge.JudgeGrader if isinstance(g, S.JudgeGrader) else judge.PairwiseGrader
        return cls(g, judge_base_url, judge_model)
    if isinstance(g, S.PythonGrader):
        from golive.evals.graders.python import PythonGrader

        return PythonGrader(g, base_dir)
    raise TypeError(f"no grader for {type(g).__name__}")
