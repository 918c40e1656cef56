"""Deterministic graders: string checks, JSON validity and schema, numeric tolerance."""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from golive.evals.graders.base import Grade, GradeInput, SyncGrader
from golive.evals.prompts import references


def _fold(s: str, insensitive: bool) -> str:
    return s.casefold() if insensitive else s


class EqualsGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        out = x.output.strip() if self.spec.strip else x.output
        for ref in references(x.expected):
            ref = ref.strip() if self.spec.strip else ref
            if _fold(out, self.spec.case_insensitive) == _fold(ref, self.spec.case_insensitive):
                return Grade(1.0, f"equals {ref!r}")
        return Grade(0.0, "differs from the expected answer")


class ContainsGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        wanted = [self.spec.value] if self.spec.value is not None else references(x.expected)
        out = _fold(x.output, self.spec.case_insensitive)
        for w in wanted:
            if w and _fold(w, self.spec.case_insensitive) in out:
                return Grade(1.0, f"contains {w!r}")
        return Grade(0.0, f"contains none of {wanted!r}")


class RegexGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        patterns = [self.spec.pattern] if self.spec.pattern is not None else references(x.expected)
        flags = re.IGNORECASE if self.spec.case_insensitive else 0
        for p in patterns:
            try:
                rx = re.compile(p, flags)
            except re.error as e:
                return Grade(None, f"expected answer is not a valid regex: {e}")
            m = rx.fullmatch(x.output.strip()) if self.spec.fullmatch else rx.search(x.output)
            if m:
                return Grade(1.0, f"matches /{p}/")
        return Grade(0.0, f"does not match {patterns!r}")


def extract_json(text: str) -> Any:
    """The first JSON value in `text` (inside ``` fences or prose); ValueError if none."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object or array found")


def parse_json(text: str, extract: bool) -> Any:
    if extract:
        return extract_json(text)
    return json.loads(text)


class JsonValidGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        try:
            parse_json(x.output, self.spec.extract)
        except ValueError as e:  # JSONDecodeError is a ValueError
            return Grade(0.0, f"not valid JSON: {e}")
        return Grade(1.0, "valid JSON")


class JsonSchemaGrader(SyncGrader):
    def __init__(self, spec: Any, base_dir: Path):
        super().__init__(spec)
        self.base_dir = base_dir

    @cached_property
    def validator(self):
        from jsonschema import Draft202012Validator, SchemaError

        schema = self.spec.schema_
        if schema is None:
            path = self.base_dir / self.spec.schema_path
            try:
                schema = json.loads(path.read_text("utf-8"))
                Draft202012Validator.check_schema(schema)
            except (OSError, ValueError, SchemaError) as e:
                from golive.evals.errors import EvalError

                raise EvalError(f"cannot use schema file {path}: {e}", None,
                                f"graders[{self.name}].schema_path") from None
        return Draft202012Validator(schema)

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "schema": self.validator.schema}

    def grade_sync(self, x: GradeInput) -> Grade:
        try:
            value = parse_json(x.output, self.spec.extract)
        except ValueError as e:
            return Grade(0.0, f"not valid JSON: {e}")
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            return Grade(0.0, f"{where}: {e.message}", {"errors": len(errors)})
        return Grade(1.0, "matches the schema")


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def last_number(text: str) -> float | None:
    """The last number in the text ("... so the total is 1,250." -> 1250.0)."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return float(found[-1].replace(",", ""))


class NumericGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        try:
            want = float(x.expected if not isinstance(x.expected, str)
                         else x.expected.replace(",", ""))
        except (TypeError, ValueError):
            return Grade(None, f"expected answer {x.expected!r} is not a number")
        got = last_number(x.output)
        if got is None:
            return Grade(0.0, "no number in the output")
        allowed = max(self.spec.tolerance, self.spec.relative * abs(want))
        ok = math.isclose(got, want, rel_tol=0, abs_tol=allowed) if allowed else got == want
        return Grade(1.0 if ok else 0.0, f"got {got:g}, expected {want:g} ± {allowed:g}",
                     {"value": got})
