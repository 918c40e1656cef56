"""Datasets: JSONL or CSV rows of inputs, expected answer and metadata.

JSONL, one object a line:
    {"id": "q1", "input": "Capital of France?", "expected": "Paris", "metadata": {"topic": "geo"}}
`inputs` may be an object of template variables instead of `input`; any other
top-level key is a template variable too.

CSV with a header: `id` and `expected` are what they say, `metadata` holds a JSON
object, `metadata.KEY` columns become metadata, every other column is a template
variable.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from golive.evals.errors import EvalError

_RESERVED = {"id", "input", "inputs", "expected", "metadata"}


class Example(BaseModel):
    """A dataset row: template variables, the expected answer, free metadata.

    Also what an eval file's `few_shot.examples` holds (golive.evals.spec imports it
    from here, so the dependency goes one way: spec -> dataset)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    expected: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def load_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise EvalError("no such dataset file", str(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl(path)
    elif suffix in (".csv", ".tsv"):
        rows = _csv(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise EvalError(f"unknown dataset format {suffix!r}: use .jsonl or .csv", str(path))
    if not rows:
        raise EvalError("the dataset has no rows", str(path))
    seen: dict[str, int] = {}
    for line, ex in rows:
        assert ex.id is not None
        if ex.id in seen:
            raise EvalError(f"duplicate id {ex.id!r} (first on line {seen[ex.id]})",
                            f"{path}:{line}", "id")
        seen[ex.id] = line
    examples = [ex for _, ex in rows]
    return examples[:limit] if limit else examples


def _example(obj: dict[str, Any], where: str, index: int) -> Example:
    inputs: dict[str, Any] = {}
    if "inputs" in obj:
        if not isinstance(obj["inputs"], dict):
            raise EvalError("must be an object of template variables", where, "inputs")
        inputs.update(obj["inputs"])
    if "input" in obj:
        inputs["input"] = obj["input"]
    inputs.update({k: v for k, v in obj.items() if k not in _RESERVED})
    if not inputs:
        raise EvalError("row has no inputs: give `input`, `inputs` or template-variable fields",
                        where, "input")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise EvalError("must be an object", where, "metadata")
    raw_id = obj.get("id")
    if raw_id is not None and not isinstance(raw_id, str | int):
        raise EvalError("must be a string or an integer", where, "id")
    return Example(id=str(raw_id) if raw_id is not None else str(index + 1), inputs=inputs,
                   expected=obj.get("expected"), metadata=metadata)


def _jsonl(path: Path) -> list[tuple[int, Example]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"not valid JSON: {e.msg} (column {e.colno})", where) from None
            if not isinstance(obj, dict):
                raise EvalError("each line must be a JSON object", where)
            out.append((lineno, _example(obj, where, len(out))))
    return out


def _csv(path: Path, delimiter: str) -> list[tuple[int, Example]]:
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise EvalError("the CSV file has no header row", f"{path}:1")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise EvalError(f"{len(reader.fieldnames) + len(row[None])} fields, but the "
                                f"header has {len(reader.fieldnames)}", where)
            missing = [k for k, v in row.items() if v is None]
            if missing:
                raise EvalError(f"too few fields: no value for {', '.join(missing)}", where)
            obj: dict[str, Any] = {}
            meta: dict[str, Any] = {}
            for key, value in row.items():
                if key == "metadata":
                    if value:
                        try:
                            meta.update(json.loads(value))
                        except (json.JSONDecodeError, TypeError, ValueError):
                            raise EvalError("must hold a JSON object", where, "metadata") from None
                elif key.startswith("metadata."):
                    meta[key.removeprefix("metadata.")] = value
                else:
                    obj[key] = value
            obj["metadata"] = meta
            out.append((reader.line_num, _example(obj, where, len(out))))
    return out


def write_jsonl(path: str | Path, examples: list[Example]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for ex in examples:
            row: dict[str, Any] = {"id": ex.id, "inputs": ex.inputs, "expected": ex.expected}
            if ex.metadata:
                row["metadata"] = ex.metadata
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
