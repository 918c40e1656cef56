"""Fewer requests: several independent tasks answered in one structured response.

Each task has a name, an instruction and a JSON schema (or a pydantic model) for
its result. `combine()` sends them all as one chat request whose JSON schema has
one field per task, parses the answer back per task, validates each result
against its own schema, and retries only the tasks that failed. With
`short_keys=True` every property name in the schema is replaced by a short key
(a, b, ..., aa, ...) with the long name kept as the property's description, so
the model writes fewer tokens; the keys are mapped back before validation.

Works with any OpenAI-compatible server that enforces `response_format`
json_schema (golive does, with a grammar); the client is an `openai.OpenAI` or
`openai.AsyncOpenAI` (anything with `chat.completions.create`).

    tasks = [Task("sentiment", "Is the review positive or negative?",
                  {"type": "string", "enum": ["positive", "negative"]}),
             Task("product", "Which product is reviewed?", {"type": "string"})]
    result = await combine(client, "smollm2-135m-instruct", tasks, context=review)
    result.values  # {"sentiment": "positive", "product": "kettle"}
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from golive.schema_rules import is_strict

__all__ = ["Combined", "CombineResult", "Task", "TaskResult", "combine", "combine_sync",
           "strict_schema"]

SYSTEM = ("Do every task below on the input. Answer with one JSON object that has one field "
          "per task, holding that task's result.")
_FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


# ---- tasks and results -------------------------------------------------------------


@dataclass
class Task:
    name: str  # the task's field in the combined answer
    instruction: str
    schema: dict[str, Any] | type[BaseModel]

    @property
    def json_schema(self) -> dict[str, Any]:
        if isinstance(self.schema, type) and issubclass(self.schema, BaseModel):
            return strict_schema(self.schema)
        return self.schema  # type: ignore[return-value]

    def validate(self, value: Any) -> Any:
        """The validated result (a model instance for pydantic tasks); raises ValueError."""
        if isinstance(self.schema, type) and issubclass(self.schema, BaseModel):
            try:
                return self.schema.model_validate(value)
            except ValidationError as e:
                raise ValueError(str(e)) from None
        errors = sorted(jsonschema.Draft202012Validator(self.schema, format_checker=_FORMATS)
                        .iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise ValueError("; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}"
                                       for e in errors[:3]))
        return value


@dataclass
class TaskResult:
    name: str
    value: Any = None
    ok: bool = False
    error: str | None = None
    attempts: int = 0


@dataclass
class CombineResult:
    results: dict[str, TaskResult]
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    raw: list[str] = field(default_factory=list)  # each response's text, in order

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results.values())

    @property
    def values(self) -> dict[str, Any]:
        """Validated values of the tasks that succeeded."""
        return {k: r.value for k, r in self.results.items() if r.ok}

    @property
    def failed(self) -> list[str]:
        return [k for k, r in self.results.items() if not r.ok]


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema under OpenAI strict rules: every object closed
    (additionalProperties false) and every property required (an optional field
    stays nullable through its anyOf with null)."""
    schema = copy.deepcopy(model.model_json_schema())

    def walk(s: Any) -> None:
        if isinstance(s, dict):
            if s.get("type") == "object" or "properties" in s:
                s.setdefault("properties", {})
                s["required"] = list(s["properties"])
                s["additionalProperties"] = False
                for p in s["properties"].values():
                    if isinstance(p, dict):
                        p.pop("default", None)  # strict mode has no defaults
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


# ---- one combined request (pure: no I/O) ---------------------------------------------


def short_names() -> Iterator[str]:
    """a, b, ..., z, aa, ab, ...: one token each for the first few hundred."""
    for size in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=size):
            yield "".join(letters)


class Combined:
    """The schema, messages and parsing of one request that carries several tasks."""

    def __init__(self, tasks: Sequence[Task], short_keys: bool = False,
                 strict: bool | None = None, name: str = "combined") -> None:
        if not tasks:
            raise ValueError("combine needs at least one task")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique: {names}")
        self.tasks = list(tasks)
        self.name = name
        self.short_keys = short_keys
        long_schema = self._long_schema()
        self.to_short: dict[str, str] = {}
        if short_keys:
            gen = short_names()
            for prop in _property_names(long_schema):
                if prop not in self.to_short:
                    self.to_short[prop] = next(gen)
        self.to_long = {v: k for k, v in self.to_short.items()}
        self.schema = _rename(long_schema, self.to_short) if short_keys else long_schema
        # OpenAI's strict rules, the same ones the server applies (golive.schema_rules)
        self.strict = is_strict(self.schema) if strict is None else strict

    def key(self, task: Task) -> str:
        return self.to_short.get(task.name, task.name)

    def _long_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        defs: dict[str, Any] = {}
        for i, task in enumerate(self.tasks):
            props[task.name] = _embed(task.json_schema, f"t{i}_", defs)
        root: dict[str, Any] = {"type": "object", "properties": props,
                                "required": list(props), "additionalProperties": False}
        if defs:
            root["$defs"] = defs
        return root

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema",
                "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict}}

    def messages(self, context: str | None = None,
                 system: str | None = None) -> list[dict[str, str]]:
        lines = [f"- {self.key(t)}: {t.instruction}" for t in self.tasks]
        user = "Tasks:\n" + "\n".join(lines)
        if context:
            user = f"Input:\n{context}\n\n{user}"
        return [{"role": "system", "content": system or SYSTEM}, {"role": "user", "content": user}]

    def parse(self, text: str | None) -> dict[str, TaskResult]:
        """Each task's result from one answer; a task fails alone if its part is bad."""
        out = {t.name: TaskResult(t.name, attempts=1) for t in self.tasks}
        try:
            data = json.loads(text or "")
        except ValueError as e:
            for r in out.values():
                r.error = f"the answer is not valid JSON: {e}"
            return out
        if not isinstance(data, dict):
            for r in out.values():
                r.error = "the answer is not a JSON object"
            return out
        for task in self.tasks:
            r = out[task.name]
            key = self.key(task)
            if key not in data:
                r.error = f"the answer has no field {key!r}"
                continue
            value = _unrename(data[key], self.to_long) if self.short_keys else data[key]
            try:
                r.value, r.ok = task.validate(value), True
            except ValueError as e:
                r.error = str(e)
        return out


def _property_names(schema: Any) -> Iterator[str]:
    """Every property name in a schema, in order of appearance (root first)."""
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            yield name
            yield from _property_names(sub)
        for key, sub in schema.items():
            if key != "properties":
                yield from _property_names(sub)
    elif isinstance(schema, list):
        for sub in schema:
            yield from _property_names(sub)


def _rename(schema: Any, to_short: dict[str, str]) -> Any:
    """The schema with short property names; each keeps its long name as description."""
    if isinstance(schema, list):
        return [_rename(s, to_short) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, sub in schema.items():
        if key == "properties" and isinstance(sub, dict):
            props = {}
            for name, ps in sub.items():
                ps = _rename(ps, to_short)
                if isinstance(ps, dict):
                    desc = ps.get("description")
                    ps = {"description": f"{name}: {desc}" if desc else name,
                          **{k: v for k, v in ps.items() if k != "description"}}
                props[to_short[name]] = ps
            out[key] = props
        elif key == "required" and isinstance(sub, list):
            out[key] = [to_short.get(n, n) for n in sub]
        else:
            out[key] = _rename(sub, to_short)
    return out


def _unrename(value: Any, to_long: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {to_long.get(k, k): _unrename(v, to_long) for k, v in value.items()}
    if isinstance(value, list):
        return [_unrename(v, to_long) for v in value]
    return value


def _embed(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` as a property of the combined root: its $defs move to the root's $defs
    under `prefix`, and its $refs (also "#" for recursion) are rewritten to match."""
    schema = copy.deepcopy(schema)
    own: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        for name, sub in (schema.pop(key, None) or {}).items():
            own[f"#/{key}/{name}"] = (f"{prefix}{name}", sub)
    root_name = f"{prefix}root"
    uses_root = False

    def fix(s: Any) -> Any:
        nonlocal uses_root
        if isinstance(s, list):
            return [fix(v) for v in s]
        if not isinstance(s, dict):
            return s
        out = {}
        for k, v in s.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                for target, (new, _) in own.items():
                    if v == target or v.startswith(target + "/"):
                        v = "#/$defs/" + new + v[len(target):]
                        break
                else:
                    uses_root = True
                    v = "#/$defs/" + root_name + v[1:]
            out[k] = fix(v)
        return out

    for _, (new, sub) in own.items():
        defs[new] = fix(sub)
    body = fix(schema)
    if uses_root:
        defs[root_name] = body
        return {"$ref": f"#/$defs/{root_name}"}
    return body


# ---- running it ------------------------------------------------------------------------


def _kwargs(combined: Combined, context: str | None, system: str | None, model: str,
            create: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "messages": combined.messages(context, system),
            "response_format": combined.response_format(), **create}


def _account(result: CombineResult, response: Any, combined: Combined,
             attempt: int) -> None:
    result.requests += 1
    usage = getattr(response, "usage", None)
    if usage is not None:
        result.prompt_tokens += usage.prompt_tokens or 0
        result.completion_tokens += usage.completion_tokens or 0
        details = getattr(usage, "prompt_tokens_details", None)
        result.cached_tokens += getattr(details, "cached_tokens", 0) or 0
    text = response.choices[0].message.content if response.choices else None
    result.raw.append(text or "")
    for name, r in combined.parse(text).items():
        r.attempts = attempt
        result.results[name] = r


def _plan(tasks: Sequence[Task], result: CombineResult, short_keys: bool,
          strict: bool | None) -> Combined | None:
    todo = [t for t in tasks if not result.results[t.name].ok]
    return Combined(todo, short_keys, strict) if todo else None


async def combine(client: Any, model: str, tasks: Sequence[Task], context: str | None = None,
                  *, short_keys: bool = False, retries: int = 1, strict: bool | None = None,
                  system: str | None = None, **create: Any) -> CombineResult:
    """Run `tasks` in one request (plus up to `retries` more for the failed ones).

    `create` goes to `chat.completions.create` (max_tokens, temperature, ...)."""
    result = CombineResult({t.name: TaskResult(t.name) for t in tasks})
    for attempt in range(1, retries + 2):
        combined = _plan(tasks, result, short_keys, strict)
        if combined is None:
            break
        response = client.chat.completions.create(
            **_kwargs(combined, context, system, model, create))
        if inspect.isawaitable(response):
            response = await response
        _account(result, response, combined, attempt)
    return result


def combine_sync(client: Any, model: str, tasks: Sequence[Task], context: str | None = None,
                 *, short_keys: bool = False, retries: int = 1, strict: bool | None = None,
                 system: str | None = None, **create: Any) -> CombineResult:
    """`combine()` with a synchronous client (openai.OpenAI)."""
    result = CombineResult({t.name: TaskResult(t.name) for t in tasks})
    for attempt in range(1, retries + 2):
        combined = _plan(tasks, result, short_keys, strict)
        if combined is None:
            break
        response = client.chat.completions.create(
            **_kwargs(combined, context, system, model, create))
        _account(result, response, combined, attempt)
    return result
