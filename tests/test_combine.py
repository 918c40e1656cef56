"""golive.patterns.combine: several tasks in one structured request.

The schema building, short keys and per-task parsing are pure logic (tested
directly; the retry test uses a scripted client because it is about which tasks
get re-asked). The end-to-end tests run against the real server.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import MODEL
from pydantic import BaseModel

from golive import schema_rules
from golive.patterns.combine import Combined, Task, combine, combine_sync, strict_schema

REVIEW = ("I bought the Zephyr kettle in March. It boils fast and looks great, but the lid "
          "broke after two weeks. Support (help@zephyr.example) replaced it quickly. 4/5.")


class Contact(BaseModel):
    email: str | None
    answered_quickly: bool


class Node(BaseModel):
    label: str
    children: list[Node]


TASKS = [
    Task("sentiment_of_the_review", "Is the review positive, negative or mixed?",
         {"type": "string", "enum": ["positive", "negative", "mixed"]}),
    Task("product_name", "Which product is reviewed?", {"type": "string", "maxLength": 40}),
    Task("rating_out_of_five", "The rating out of 5.",
         {"type": "integer", "minimum": 1, "maximum": 5}),
    Task("support_contact", "The support contact.", Contact),
]


# ---- pure logic ---------------------------------------------------------------------


def test_combined_schema_has_one_field_per_task() -> None:
    c = Combined(TASKS)
    assert list(c.schema["properties"]) == [t.name for t in TASKS]
    assert c.schema["required"] == [t.name for t in TASKS]
    schema_rules.check(c.schema)
    assert c.strict
    assert c.response_format()["json_schema"]["strict"] is True
    assert "- product_name: Which product is reviewed?" in c.messages(REVIEW)[1]["content"]


def test_short_keys_round_trip() -> None:
    c = Combined(TASKS, short_keys=True)
    props = c.schema["properties"]
    assert list(props) == ["a", "b", "c", "d"]
    assert props["a"]["description"] == "sentiment_of_the_review"
    # nested property names are shortened too, their long name kept as description
    inner = props["d"]["properties"]
    assert set(inner) == {c.to_short["email"], c.to_short["answered_quickly"]}
    schema_rules.check(c.schema)
    answer = {"a": "mixed", "b": "Zephyr kettle", "c": 4,
              "d": {c.to_short["email"]: "help@zephyr.example", c.to_short["answered_quickly"]:
                    True}}
    results = c.parse(json.dumps(answer))
    assert all(r.ok for r in results.values())
    assert results["support_contact"].value == Contact(email="help@zephyr.example",
                                                       answered_quickly=True)
    assert results["rating_out_of_five"].value == 4
    assert len(json.dumps(c.schema)) > 0 and c.key(TASKS[0]) == "a"


def test_each_task_validated_alone() -> None:
    c = Combined(TASKS)
    results = c.parse(json.dumps({"sentiment_of_the_review": "great", "product_name": "kettle",
                                  "rating_out_of_five": 9}))
    assert results["product_name"].ok and results["product_name"].value == "kettle"
    assert not results["sentiment_of_the_review"].ok and "great" in results[
        "sentiment_of_the_review"].error
    assert not results["rating_out_of_five"].ok
    assert "no field" in results["support_contact"].error
    broken = c.parse('{"sentiment_of_the_review": "pos')
    assert not any(r.ok for r in broken.values())


def test_defs_and_recursion_are_embedded() -> None:
    tree = Task("tree", "A small tree.", Node)
    ref = Task("points", "Two points.", {
        "type": "object", "properties": {"p": {"type": "array", "items": {"$ref": "#/$defs/pt"}}},
        "required": ["p"], "additionalProperties": False,
        "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}},
                         "required": ["x"], "additionalProperties": False}}})
    c = Combined([tree, ref])
    defs = c.schema["$defs"]
    assert "t0_Node" in defs and "t1_pt" in defs
    assert c.schema["properties"]["points"]["properties"]["p"]["items"] == {"$ref": "#/$defs/t1_pt"}
    text = json.dumps(c.schema)
    assert '"#/$defs/Node"' not in text and '"#/$defs/pt"' not in text
    schema_rules.check(c.schema)
    ok = c.parse(json.dumps({"tree": {"label": "r", "children": [{"label": "c", "children": []}]},
                             "points": {"p": [{"x": 1}, {"x": 2.5}]}}))
    assert all(r.ok for r in ok.values()), ok
    assert isinstance(ok["tree"].value, Node)


def test_root_recursion_is_embedded() -> None:
    lst = {"type": "object", "properties": {"v": {"type": "integer"},
                                            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
           "required": ["v", "next"], "additionalProperties": False}
    c = Combined([Task("list", "A list.", lst)])
    assert c.schema["properties"]["list"] == {"$ref": "#/$defs/t0_root"}
    assert c.schema["$defs"]["t0_root"]["properties"]["next"]["anyOf"][0] == {
        "$ref": "#/$defs/t0_root"}
    assert c.parse('{"list":{"v":1,"next":{"v":2,"next":null}}}')["list"].ok


def test_strict_schema_from_pydantic() -> None:
    s = strict_schema(Contact)
    assert s["additionalProperties"] is False and s["required"] == ["email", "answered_quickly"]
    schema_rules.check(s)


def test_bad_tasks() -> None:
    with pytest.raises(ValueError):
        Combined([])
    with pytest.raises(ValueError):
        Combined([TASKS[0], TASKS[0]])


class ScriptedClient:
    """Answers from a script and records each request (the test is about retries)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kw: Any) -> Any:
        self.requests.append(kw)
        text = json.dumps(self.answers[len(self.requests) - 1])
        return SimpleNamespace(
            choices=[SimpleNamespace(message=SimpleNamespace(content=text))],
            usage=SimpleNamespace(prompt_tokens=10, completion_tokens=5,
                                  prompt_tokens_details=None))


def test_only_failed_tasks_are_retried() -> None:
    good = {"sentiment_of_the_review": "mixed", "product_name": "kettle",
            "rating_out_of_five": 7,  # out of range: this task alone is re-asked
            "support_contact": {"email": None, "answered_quickly": True}}
    client = ScriptedClient([good, {"rating_out_of_five": 4}])
    result = combine_sync(client, MODEL, TASKS, REVIEW, retries=2)
    assert result.ok and result.requests == 2
    assert result.values["rating_out_of_five"] == 4
    assert result.results["rating_out_of_five"].attempts == 2
    assert result.results["product_name"].attempts == 1
    retry_schema = client.requests[1]["response_format"]["json_schema"]["schema"]
    assert list(retry_schema["properties"]) == ["rating_out_of_five"]
    assert result.prompt_tokens == 20 and result.completion_tokens == 10


def test_retries_run_out() -> None:
    bad = {"sentiment_of_the_review": "??"}
    client = ScriptedClient([bad, bad])
    result = combine_sync(client, MODEL, TASKS[:1], retries=1)
    assert not result.ok and result.requests == 2 and result.failed == ["sentiment_of_the_review"]


# ---- against the server ------------------------------------------------------------------


def test_combine_against_server(server) -> None:
    import asyncio

    async def run() -> tuple[Any, Any]:
        client = server.aclient()
        long, short = await asyncio.gather(
            combine(client, MODEL, TASKS, REVIEW, max_tokens=150, temperature=0),
            combine(client, MODEL, TASKS, REVIEW, short_keys=True, max_tokens=150,
                    temperature=0))
        await client.close()
        return long, short

    long, short = asyncio.run(run())
    for result in (long, short):
        assert result.ok, {k: r.error for k, r in result.results.items()}
        assert result.requests == 1  # grammar-constrained: nothing to retry
        assert result.values["sentiment_of_the_review"] in ("positive", "negative", "mixed")
        assert 1 <= result.values["rating_out_of_five"] <= 5
        assert isinstance(result.values["support_contact"], Contact)
    # the short-key answer really used the short keys
    assert set(json.loads(short.raw[0])) == {"a", "b", "c", "d"}
    assert set(json.loads(long.raw[0])) == {t.name for t in TASKS}


def test_combine_sync_with_openai_client(client) -> None:
    result = combine_sync(client, MODEL, TASKS[:2], REVIEW, max_tokens=80, temperature=0)
    assert result.ok and result.requests == 1
    assert result.completion_tokens > 0 and result.prompt_tokens > 0
