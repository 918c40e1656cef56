"""Python function graders: `module:function`, imported from the eval file's folder.

The function gets the keyword arguments it names among: output, expected,
inputs, metadata, messages, plus the grader's `args`. It returns a bool, a
number in [0, 1], None (not measured), or a dict {"score": ..., "reason": ...}.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from golive.evals.errors import EvalError
from golive.evals.graders.base import Grade, GradeInput, SyncGrader


def load_function(ref: str, base_dir: Path, field: str) -> Callable[..., Any]:
    module_name, func_name = ref.split(":", 1)
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EvalError(f"cannot import module {module_name!r}: {e}", None, field) from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise EvalError(f"module {module_name!r} has no function {func_name!r}", None, field)
    return fn


class PythonGrader(SyncGrader):
    def __init__(self, spec: Any, base_dir: Path):
        super().__init__(spec)
        self.fn = load_function(spec.function, base_dir, f"graders[{self.name}].function")
        params = inspect.signature(self.fn).parameters
        self.takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.names = set(params)

    def grade_sync(self, x: GradeInput) -> Grade:
        available = {"output": x.output, "expected": x.expected, "inputs": x.inputs,
                     "metadata": x.metadata, "messages": x.messages, **self.spec.args}
        kwargs = available if self.takes_all else {k: v for k, v in available.items()
                                                   if k in self.names}
        try:
            result = self.fn(**kwargs)
        except Exception as e:  # the user's code: report, don't crash the run
            return Grade(None, f"{self.spec.function} raised {type(e).__name__}: {e}")
        return to_grade(result, self.spec.function)


def to_grade(result: Any, who: str) -> Grade:
    reason = ""
    if isinstance(result, dict):
        reason = str(result.get("reason", ""))
        result = result.get("score")
    if result is None:
        return Grade(None, reason or f"{who} returned no score")
    if isinstance(result, bool):
        return Grade(1.0 if result else 0.0, reason)
    if isinstance(result, int | float) and math.isfinite(result) and 0 <= result <= 1:
        return Grade(float(result), reason)
    return Grade(None, f"{who} returned {result!r}; expected a bool or a number in [0, 1]")
