"""Pure logic of structured outputs and tools: output parsing, grammar text, prompt
rendering, conversation checks. (End to end through the server: test_structured.py,
test_tools.py.)"""

from __future__ import annotations

import json
import random

import pytest

from golive.api.schemas import ChatCompletionRequest, Tool
from golive.api.structured import (
    ToolOutput,
    callable_tools,
    check_messages,
    render_messages,
    response_schema,
    tool_grammar,
)
from golive.engine.types import InvalidRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}

TWO_CALLS = (
    '<tool_call>{"name":"get_weather","arguments":{"city":"Pa\\"}ris","n":[1,{"a":"]"}]}}'
    '</tool_call><tool_call>{"name":"get_time","arguments":{}}</tool_call>'
)


def req(**kw) -> ChatCompletionRequest:
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatCompletionRequest(model="m", **kw)


def feed_in_pieces(out: ToolOutput, text: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    deltas, i = [], 0
    while i < len(text):
        n = rng.randint(1, 7)
        deltas += out.feed(text[i : i + n])
        i += n
    return deltas + out.close()


@pytest.mark.parametrize("seed", range(5))
def test_tool_calls_parse_in_any_chunking(seed: int) -> None:
    out = ToolOutput(calls_possible=True, text_allowed=True)
    deltas = feed_in_pieces(out, TWO_CALLS, seed)
    msg = out.message()
    assert msg["content"] is None and out.finish_reason("stop") == "tool_calls"
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_weather", "get_time"]
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {
        "city": 'Pa"}ris', "n": [1, {"a": "]"}]}
    assert msg["tool_calls"][1]["function"]["arguments"] == "{}"
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in msg["tool_calls"])
    assert len({c["id"] for c in msg["tool_calls"]}) == 2
    # streamed deltas: a head per call (id, type, name, empty arguments), then arguments
    heads = [d["tool_calls"][0] for d in deltas if "id" in d["tool_calls"][0]]
    assert [h["index"] for h in heads] == [0, 1]
    assert heads[0] == {"index": 0, "id": msg["tool_calls"][0]["id"], "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    for i, call in enumerate(msg["tool_calls"]):
        args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas
                       if d["tool_calls"][0]["index"] == i)
        assert args == call["function"]["arguments"]
    assert all(set(d) == {"tool_calls"} for d in deltas)


def test_text_answer_streams_as_content() -> None:
    out = ToolOutput(calls_possible=True, text_allowed=True)
    assert out.feed("Hel") == [{"content": "Hel"}]
    assert out.feed("lo <tool_call>") == [{"content": "lo <tool_call>"}]
    assert out.close() == []
    assert out.message()["content"] == "Hello <tool_call>" and "tool_calls" not in out.message()
    assert out.finish_reason("stop") == "stop"


def test_undecided_prefix_is_held_then_released() -> None:
    out = ToolOutput(calls_possible=True, text_allowed=True)
    assert out.feed("<tool") == []  # could still be a call
    assert out.feed("s>") == [{"content": "<tools>"}]
    out = ToolOutput(calls_possible=True, text_allowed=True)
    assert out.feed("<to") == [] and out.close() == [{"content": "<to"}]


def test_without_tools_text_passes_through() -> None:
    out = ToolOutput(calls_possible=False)
    assert out.feed("") == [{"content": ""}]
    assert out.feed(TWO_CALLS) == [{"content": TWO_CALLS}]
    assert out.message()["content"] == TWO_CALLS


def test_truncated_call_keeps_partial_arguments() -> None:
    out = ToolOutput(calls_possible=True, text_allowed=False)
    feed_in_pieces(out, '<tool_call>{"name":"get_weather","arguments":{"city":"Par', 1)
    msg = out.message()
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"city":"Par'
    assert out.finish_reason("length") == "length"


def test_tool_grammar_shapes() -> None:
    tools = [Tool.model_validate(WEATHER), Tool.model_validate(TIME)]
    auto = tool_grammar(tools, text_allowed=True, parallel=True)
    assert auto.startswith("start: calls | answer\ncalls: call+\ncall: call_0 | call_1\n")
    assert '"x-guidance":{"whitespace_flexible":false,"lenient":false}' in auto  # strict tool
    assert '"lenient":true' in auto  # get_time is not strict
    assert "TEXT: /[^<]" in auto
    one = tool_grammar(tools[:1], text_allowed=False, parallel=False)
    assert one.startswith("start: calls\ncalls: call\n") and "TEXT" not in one
    fmt = tool_grammar(tools, True, True, {"type": "object"})
    assert 'answer: %json {"type":"object"' in fmt


def test_callable_tools_by_choice() -> None:
    tools = [WEATHER, TIME]
    assert [t.function.name for t in callable_tools(req(tools=tools))] == ["get_weather",
                                                                           "get_time"]
    assert callable_tools(req(tools=tools, tool_choice="none")) == []
    named = {"type": "function", "function": {"name": "get_time"}}
    assert [t.function.name for t in callable_tools(req(tools=tools, tool_choice=named))] == [
        "get_time"]


@pytest.mark.parametrize(
    "kw,param",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ],
)
def test_callable_tools_errors(kw: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        callable_tools(req(**kw))
    assert err.value.param == param


def test_response_schema_checks() -> None:
    assert response_schema(req()) == (None, False, "")
    assert response_schema(req(response_format={"type": "text"}))[0] is None
    with pytest.raises(InvalidRequest) as err:
        response_schema(req(response_format={"type": "json_object"}))
    assert err.value.param == "messages"
    ok = req(response_format={"type": "json_object"},
             messages=[{"role": "user", "content": "Reply in Json"}])
    assert response_schema(ok)[0] == {"type": "object"}
    with pytest.raises(InvalidRequest) as err:
        response_schema(req(response_format={"type": "json_schema"}))
    assert err.value.param == "response_format.json_schema"
    with pytest.raises(InvalidRequest) as err:
        response_schema(req(response_format={"type": "json_schema", "json_schema": {"name": "x"}}))
    assert err.value.param == "response_format.json_schema.schema"
    schema = {"type": "object"}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert response_schema(req(response_format=rf)) == (schema, True, "x")


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
    {"role": "tool", "tool_call_id": "call_2", "content": "25C, sunny"},
]


def test_render_tool_conversation() -> None:
    body = req(messages=CONVERSATION, tools=[WEATHER])
    check_messages(body.messages)
    msgs = render_messages(body, callable_tools(body), None)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith("Be brief.\n\nYou can call these functions:\n<tools>\n")
    assert '{"name":"get_weather","description":"Current weather in a city"' in msgs[0]["content"]
    assert msgs[2]["content"] == (
        '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'
        '<tool_call>{"name":"get_weather","arguments":{"city":"Rome"}}</tool_call>')
    assert msgs[3]["content"] == (
        '<tool_response name="get_weather">\n18C, cloudy\n</tool_response>\n'
        '<tool_response name="get_weather">\n25C, sunny\n</tool_response>')
    # tool_choice "none": the history still renders, but no functions are offered
    none = req(messages=CONVERSATION, tools=[WEATHER], tool_choice="none")
    assert "<tools>" not in render_messages(none, callable_tools(none), None)[0]["content"]


def test_render_schema_instruction() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    msgs = render_messages(req(), [], schema)
    assert msgs[0] == {"role": "system", "content": "Answer with a JSON object that matches "
                       'this JSON schema:\n{"type":"object","properties":{"a":{"type":"integer"}}}'}


@pytest.mark.parametrize(
    "messages,param",
    [
        (CONVERSATION[:4], "messages[2].role"),  # call_2 never answered
        (CONVERSATION[:3] + [{"role": "user", "content": "?"}], "messages[2].role"),
        ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9",
                                             "content": "r"}], "messages[1].tool_call_id"),
        ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}],
         "messages[1].tool_call_id"),
        ([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                "function": {"name": "f"}}]}],
         "messages[0].tool_calls[0].function.arguments"),
    ],
)
def test_conversation_errors(messages: list[dict], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_messages(req(messages=messages).messages)
    assert err.value.param == param


# ---- wrap-up near max_tokens (real vocabulary, no decoding needed) -----------------------


@pytest.fixture(scope="module")
def compiler():
    from golive.engine.grammar import GrammarCompiler
    from golive.engine.model import Model

    model = Model()
    yield GrammarCompiler(model.handle)
    model.close()


def test_budgeted_matcher_steers_toward_closing(compiler) -> None:
    import numpy as np

    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "tags": {"type": "array",
                                                        "items": {"type": "string"}}},
              "required": ["name", "tags"], "additionalProperties": False}
    plain = compiler.compile_json_schema(schema)
    assert plain.with_budget(None) is plain
    budgeted = plain.with_budget(40)
    assert budgeted.wrap_at == 40 - 16 and plain.wrap_at is None
    m = plain.with_budget(1).matcher()  # wraps up from the start
    tk = compiler.tokenizer
    for t in tk.tokenize_str('{"name":"Bob'):
        assert m.accept(t)
    assert m.wrapping_up and m.forced_tokens() == [] and m.validate_draft([5]) == 0
    logits = np.zeros(compiler.n_vocab, dtype=np.float32)
    m.apply(logits)
    best = int(logits.argmax())
    assert tk.decode_bytes([best]).startswith(b'"')  # inside a string: close it
    assert m.accept(best)
    for t in tk.tokenize_str(',"tags":['):  # what the grammar forces next
        assert m.accept(t)
    # outside strings: the tokens that close containers win where the grammar allows them
    logits = np.zeros(compiler.n_vocab, dtype=np.float32)
    m.apply(logits)
    assert tk.decode_bytes([int(logits.argmax())]).startswith(b"]")
    # an unbudgeted matcher leaves the logits to the model
    u = plain.matcher()
    for t in tk.tokenize_str('{"name":"Bob'):
        u.accept(t)
    assert not u.wrapping_up and u.forced_tokens() == u._m.compute_ff_tokens()
