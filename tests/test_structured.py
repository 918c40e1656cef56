"""Structured outputs end to end: the openai client against the real server.

Every schema in tests/schemas/ (nested objects, arrays with minItems/maxItems, enums,
anyOf, nullable fields, $defs, recursion, formats, patterns) is sent as a
json_schema response_format; every output must parse and validate. The schema
cases run concurrently (the engine batches them), once per module.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from conftest import MODEL
from pydantic import BaseModel, Field

from golive.api.schema_check import check_strict_schema
from golive.engine.types import InvalidRequest

SCHEMAS = sorted(Path(__file__).parent.joinpath("schemas").glob("*.json"))
# the 2020-12 checker: FormatChecker() mixes in draft 3's "time" (strptime, <= 6 digits)
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
MAX_TOKENS = 120


def is_strict(schema: dict[str, Any]) -> bool:
    try:
        check_strict_schema(schema)
        return True
    except InvalidRequest:
        return False


def schema_format(path: Path) -> dict[str, Any]:
    schema = json.loads(path.read_text())
    return {"type": "json_schema",
            "json_schema": {"name": path.stem, "schema": schema, "strict": is_strict(schema)}}


@pytest.fixture(scope="module")
def suite(server) -> dict[str, Any]:
    """One answer per schema (greedy) plus a streamed one for every fourth schema."""
    async def run() -> dict[str, Any]:
        client = server.aclient()

        async def one(path: Path, stream: bool) -> tuple[str | None, str | None]:
            kw = dict(model=MODEL, max_tokens=MAX_TOKENS, temperature=0,
                      messages=[{"role": "user", "content": "Give one realistic example."}],
                      response_format=schema_format(path))
            if not stream:
                r = await client.chat.completions.create(**kw)
                return r.choices[0].message.content, r.choices[0].finish_reason
            text, reason = "", None
            async for chunk in await client.chat.completions.create(stream=True, **kw):
                for c in chunk.choices:
                    text += c.delta.content or ""
                    reason = c.finish_reason or reason
            return text, reason

        jobs = [(p.stem, False) for p in SCHEMAS] + [(p.stem, True) for p in SCHEMAS[::4]]
        paths = {p.stem: p for p in SCHEMAS}
        answers = await asyncio.gather(*(one(paths[name], s) for name, s in jobs))
        await client.close()
        return dict(zip(jobs, answers))

    return asyncio.run(run())


def test_suite_covers_the_keywords() -> None:
    assert len(SCHEMAS) >= 30
    text = " ".join(p.read_text() for p in SCHEMAS)
    for kw in ("minItems", "maxItems", "enum", "anyOf", '"null"', "$defs", '"#"', "format",
               "pattern", "properties"):
        assert kw in text, kw
    assert sum(is_strict(json.loads(p.read_text())) for p in SCHEMAS) >= 25


@pytest.mark.slow  # the suite fixture generates every schema's answer: ~40 s on 2 cores
@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_every_output_parses_and_validates(suite: dict, path: Path) -> None:
    schema = json.loads(path.read_text())
    for stream in (False, True):
        if (path.stem, stream) not in suite:
            continue
        text, reason = suite[(path.stem, stream)]
        assert reason == "stop", f"finish_reason {reason!r}: {text!r}"
        value = json.loads(text)
        jsonschema.validate(value, schema, format_checker=FORMATS)


QUESTIONS = ["List three fruits and their colors as JSON.", "Describe a cat in JSON.",
             "Hello! Reply in JSON.", "What is 2+2? Answer as JSON."]


def test_json_object_always_parses(server) -> None:
    async def run() -> list[Any]:
        client = server.aclient()
        rs = await asyncio.gather(*(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=MAX_TOKENS,
                temperature=t, seed=3, response_format={"type": "json_object"})
            for q in QUESTIONS for t in (0.0, 1.0)))
        await client.close()
        return rs

    for r in asyncio.run(run()):
        c = r.choices[0]
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(json.loads(c.message.content), dict)


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    email: str | None
    role: Literal["admin", "user", "guest"]
    address: Address
    tags: list[str] = Field(max_length=3)


def test_openai_parse_with_pydantic(client) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, response_format=Person, max_tokens=MAX_TOKENS, temperature=0,
        messages=[{"role": "system", "content": "Extract the person."},
                  {"role": "user", "content": "Ada Lovelace, 36, ada@example.com, admin, "
                                              "lives at 12 St James's Square, London."}])
    msg = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(msg.parsed, Person)
    assert 0 <= msg.parsed.age <= 120 and len(msg.parsed.tags) <= 3
    assert Person.model_validate_json(msg.content) == msg.parsed


def test_grammar_compiled_once_per_schema(client) -> None:
    # the same schema twice: the second request reuses the compiled grammar; both parse
    for _ in range(2):
        r = client.chat.completions.create(
            model=MODEL, max_tokens=40, temperature=0, response_format=schema_format(SCHEMAS[0]),
            messages=[{"role": "user", "content": "Example?"}])
        json.loads(r.choices[0].message.content)


# ---- bad input: 400 naming the field ----------------------------------------------------

OBJ = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
       "additionalProperties": False}


def js(schema: Any, strict: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                                                   "strict": strict, **extra}}


BAD = [
    ("allOf", js({**OBJ, "allOf": [{"type": "object"}]}), "response_format", "allOf"),
    ("not", js({**OBJ, "properties": {"a": {"type": "string", "not": {"const": "b"}}}}),
     "response_format", "'not'"),
    ("if", js({**OBJ, "properties": {"a": {"type": "string", "if": {}}}}), "response_format",
     "'if'"),
    ("patternProperties", js({**OBJ, "patternProperties": {"^x": {}}}), "response_format",
     "patternProperties"),
    ("no-additionalProperties", js({k: v for k, v in OBJ.items() if k != "additionalProperties"}),
     "response_format", "additionalProperties"),
    ("format", js({**OBJ, "properties": {"a": {"type": "string", "format": "color"}}}),
     "response_format", "format"),
    ("malformed-type", js({"type": "object", "properties": {"a": {"type": "foo"}}}, False),
     "response_format", "foo"),
    ("malformed-pattern", js({"type": "object", "properties": {"a": {"type": "string",
                                                                    "pattern": "(x"}}}, False),
     "response_format", "regex"),
    ("schema-not-object", js([1, 2]), "response_format.json_schema.schema", None),
    ("missing-schema", {"type": "json_schema", "json_schema": {"name": "x"}},
     "response_format.json_schema.schema", None),
    ("missing-json_schema", {"type": "json_schema"}, "response_format.json_schema", None),
    ("missing-name", {"type": "json_schema", "json_schema": {"schema": OBJ}},
     "response_format.json_schema.name", None),
    ("bad-name", js(OBJ) | {"json_schema": {"name": "a b", "schema": OBJ}},
     "response_format.json_schema.name", None),
    ("bad-type", {"type": "xml"}, "response_format.type", None),
]


@pytest.mark.parametrize("rf,param,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_response_format_is_400(client, rf: dict, param: str, needle: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       response_format=rf, max_tokens=5)
    assert err.value.status_code == 400
    assert err.value.param == param, err.value.message
    if needle:
        assert needle in err.value.message


def test_json_object_needs_the_word_json(client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_object"}, max_tokens=5)
    assert err.value.param == "messages" and "json" in err.value.message


def test_error_shape_is_openai(server) -> None:
    r = httpx.post(server.base + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "response_format": js({**OBJ, "allOf": [OBJ]})})
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == "response_format"
    assert "allOf" in err["message"] and "#/allOf" in err["message"]
    # the server stays healthy after refusing
    assert server.health()["status"] == "ok"
