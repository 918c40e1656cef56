"""Tool calls end to end: the openai client against the real server.

A call is generated under a grammar (envelope, function name, parameter schema),
returned as message.tool_calls or streamed as tool-call deltas in OpenAI's chunk
shape with finish_reason "tool_calls"; the tool's result goes back as a "tool"
message and the model answers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from conftest import MODEL
from pydantic import BaseModel

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": WEATHER_PARAMS, "strict": True}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current local time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                   "required": ["timezone"]}}}
ASK = [{"role": "user", "content": "What's the weather in Paris right now?"}]
RESULT = '{"temperature": 18, "unit": "celsius", "sky": "cloudy"}'


def check_call(call: Any, name: str = "get_weather",
               params: dict[str, Any] = WEATHER_PARAMS) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == name
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, params)
    return args


def test_round_trip(client) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice="required", max_tokens=60, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    if call.function.name == "get_weather":
        check_call(call)
    else:
        check_call(call, "get_time", TIME["function"]["parameters"])
    # the result goes back as a "tool" message; the model answers in text
    messages = [*ASK, choice.message.model_dump(exclude_none=True),
                *({"role": "tool", "tool_call_id": c.id, "content": RESULT}
                  for c in choice.message.tool_calls)]
    r2 = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME],
                                        tool_choice="none", max_tokens=40, temperature=0)
    assert r2.choices[0].finish_reason in ("stop", "length")
    assert r2.choices[0].message.content and not r2.choices[0].message.tool_calls
    # the call and its result are part of the prompt
    bare = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME],
                                          tool_choice="none", max_tokens=1, temperature=0)
    assert r2.usage.prompt_tokens > bare.usage.prompt_tokens + 20


def test_streamed_round_trip(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
        max_tokens=60, temperature=0, stream=True)
    heads, args, reasons = [], {}, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                if tc.id is not None:
                    heads.append(tc)
                    assert tc.type == "function" and tc.function.arguments == ""
                else:
                    assert tc.type is None and tc.function.name is None
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert reasons == ["tool_calls"]
    assert [h.index for h in heads] == list(range(len(heads))) and heads
    assert heads[0].function.name == "get_weather"
    jsonschema.validate(json.loads(args[0]), WEATHER_PARAMS)
    # send it back and stream the answer
    messages = [*ASK,
                {"role": "assistant", "tool_calls": [
                    {"id": h.id, "type": "function",
                     "function": {"name": h.function.name, "arguments": args[h.index]}}
                    for h in heads]},
                *({"role": "tool", "tool_call_id": h.id, "content": RESULT} for h in heads)]
    text, reason = "", None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                                max_tokens=40, temperature=0, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            assert not c.delta.tool_calls or reason is None
            reason = c.finish_reason or reason
    assert reason in ("stop", "length", "tool_calls")
    if reason != "tool_calls":
        assert text


def test_stream_chunk_shape_on_the_wire(server) -> None:
    """The exact JSON of the chunks, as OpenAI sends them."""
    body = {"model": MODEL, "messages": ASK, "tools": [WEATHER], "max_tokens": 60,
            "temperature": 0, "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    chunks = []
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body,
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    head = next(d for d in deltas if "tool_calls" in d)["tool_calls"][0]
    assert set(head) == {"index", "id", "type", "function"}
    assert head["index"] == 0 and head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    rest = [d["tool_calls"][0] for d in deltas if "tool_calls" in d][1:]
    assert rest and all(set(t) == {"index", "function"} and set(t["function"]) == {"arguments"}
                        for t in rest)
    jsonschema.validate(json.loads("".join(t["function"]["arguments"] for t in rest)),
                        WEATHER_PARAMS)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "tool_calls"}
    assert len({c["id"] for c in chunks}) == 1


def test_named_choice_and_no_parallel(client) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What time is it in Tokyo and in Paris?"}],
        tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False, max_tokens=60, temperature=0)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    check_call(calls[0], "get_time", TIME["function"]["parameters"])


def test_auto_answers_in_text_or_calls(client) -> None:
    r = client.chat.completions.create(
        model=MODEL, tools=[WEATHER], tool_choice="auto", max_tokens=40, temperature=1.0,
        seed=5, n=4, messages=[{"role": "user", "content": "Hi! What's the weather in Rome?"}])
    for c in r.choices:
        if c.message.tool_calls:
            assert c.finish_reason == "tool_calls" and c.message.content is None
            for call in c.message.tool_calls:
                check_call(call)
        else:
            assert c.finish_reason in ("stop", "length") and c.message.content
            assert not c.message.content.startswith("<")


def test_none_never_calls(client) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                       tool_choice="none", max_tokens=30, temperature=0)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason != "tool_calls"


def test_tools_with_response_format(client) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=60, temperature=0.8, seed=1, n=3,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "a", "schema": schema, "strict": True}})
    for c in r.choices:
        if c.message.tool_calls:
            check_call(c.message.tool_calls[0])
        else:
            assert c.finish_reason == "stop"
            jsonschema.validate(json.loads(c.message.content), schema)


class GetWeather(BaseModel):
    city: str
    unit: str


def test_openai_parse_with_pydantic_tool(client) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, messages=ASK, tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required", max_tokens=60, temperature=0)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)


def test_stream_helper_accumulates(client) -> None:
    with client.chat.completions.stream(
            model=MODEL, messages=ASK, tools=[openai.pydantic_function_tool(GetWeather)],
            tool_choice="required", max_tokens=60, temperature=0) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert isinstance(call.function.parsed_arguments, GetWeather)


# ---- bad input: 400 naming the field -----------------------------------------------------

STRICT_BAD = {"type": "function", "function": {
    "name": "f", "strict": True,
    "parameters": {"type": "object", "properties": {"a": {"type": "string"}},
                   "required": ["a"], "additionalProperties": False,
                   "allOf": [{"type": "object"}]}}}
BAD: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("unknown-function", {"tools": [WEATHER],
                          "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice", "nope"),
    ("bad-choice", {"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", None),
    ("choice-without-tools", {"tool_choice": "required"}, "tool_choice", None),
    ("parallel-without-tools", {"parallel_tool_calls": True}, "parallel_tool_calls", None),
    ("no-function", {"tools": [{"type": "function"}]}, "tools[0].function", None),
    ("no-type", {"tools": [{"function": {"name": "f"}}]}, "tools[0].type", None),
    ("bad-type", {"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type",
     None),
    ("bad-name", {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "tools[0].function.name", None),
    ("not-a-list", {"tools": {"type": "function"}}, "tools", None),
    ("duplicate", {"tools": [WEATHER, WEATHER]}, "tools[1].function.name", None),
    ("strict-keyword", {"tools": [WEATHER, STRICT_BAD]}, "tools[1].function.parameters",
     "allOf"),
    ("bad-parameters", {"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}]},
     "tools[0].function.parameters", None),
    ("tool-message-without-call", {"messages": [
        {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x",
                                            "content": "r"}]},
     "messages[1].tool_call_id", None),
    ("unanswered-call", {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{}"}}]},
        {"role": "user", "content": "well?"}]}, "messages[1].role", "call_1"),
]


@pytest.mark.parametrize("extra,param,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tools_are_400(server, extra: dict, param: str, needle: str | None) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 5, **extra}
    r = httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err
    if needle:
        assert needle in err["message"]
