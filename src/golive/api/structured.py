"""Structured outputs and tool calls for chat completions.

`prepare()` checks `response_format`, `tools`, `tool_choice` and the tool turns of
the conversation, renders the conversation for a model whose chat template knows
nothing of tools, and compiles the grammar the engine enforces. `ToolOutput`
turns what the model wrote back into OpenAI's `message.tool_calls` and streamed
tool-call deltas.

The tool-call format (SmolLM2's template has none, so golive defines one, close
to the Hermes/Qwen convention small models have seen):

- the system message lists the tools inside `<tools>...</tools>`, one JSON object
  per line, and says how to call them;
- a call is `<tool_call>{"name":"NAME","arguments":{...}}</tool_call>`; several
  calls follow each other directly. The grammar enforces the exact envelope,
  the function names and each function's parameter schema;
- an assistant turn with tool_calls is written back in that same form, and tool
  results become a user turn of `<tool_response name="NAME">...</tool_response>`
  blocks;
- with tool_choice "auto" the grammar allows either a call or an answer: free
  text that does not start with "<", or JSON matching response_format if given.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from golive.api.schemas import ChatCompletionRequest, Message, Tool, ToolCall
from golive.api.schema_check import check_strict_schema
from golive.backends.base import Backend, Capability
from golive.engine.types import GrammarSpec, InvalidRequest, Unsupported, lark_json

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_NAME_PREFIX = CALL_OPEN + '{"name":"'
_ARGS_PREFIX = '","arguments":'
_CALL_END = "}" + CALL_CLOSE
# A function without `parameters` takes none.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


# ---- the plan of one request ------------------------------------------------------


@dataclass
class Plan:
    """What structured handling decided for one chat request."""

    messages: list[dict[str, Any]]  # rendered with the model's own template
    grammar: object | None = None  # compiled by the backend
    tools: list[Tool] = field(default_factory=list)  # the ones the model may call now
    text_allowed: bool = True  # False: the answer must be tool calls

    @property
    def calls_possible(self) -> bool:
        return bool(self.tools)

    def output(self) -> ToolOutput:
        return ToolOutput(self.calls_possible, self.text_allowed)


async def prepare(body: ChatCompletionRequest, backend: Backend) -> Plan:
    """Check the structured parts of a request and build its grammar (400 if bad).

    The grammar is compiled here, in a worker thread, so that a bad schema is an
    HTTP 400 before the request is queued; compiled grammars are cached by hash.
    """
    check_messages(body.messages)
    fmt_schema, fmt_strict, fmt_name = response_schema(body)
    tools = callable_tools(body)
    messages = render_messages(body, tools, fmt_schema)
    if fmt_schema is None and not tools:
        return Plan(messages)
    if Capability.GRAMMAR not in backend.info.capabilities:
        field_ = "tools" if tools else "response_format"
        raise Unsupported(backend.info.id, field_, field_)
    text_allowed = body.tool_choice in (None, "auto")
    budget = None
    if not (tools and text_allowed and fmt_schema is None):  # all JSON, no free text
        # near max_tokens, steer toward closing the JSON so that the answer still parses
        budget = body.max_completion_tokens or body.max_tokens
    # the backend's compiler is built on first use (~1 s): not on the event loop
    grammar = await asyncio.to_thread(
        build_grammar, backend.compile_grammar, fmt_schema, fmt_strict, fmt_name, body, tools,
        text_allowed, budget)
    return Plan(messages, grammar, tools, text_allowed if tools else True)


# ---- checks -------------------------------------------------------------------------


def check_messages(messages: list[Message]) -> None:
    """Tool turns must answer the calls before them, as OpenAI requires."""
    open_calls: dict[str, str] = {}  # id -> index of the assistant message that made it
    for i, m in enumerate(messages):
        if m.role != "tool" and open_calls:
            ids = ", ".join(open_calls)
            raise InvalidRequest(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {ids}", f"messages[{next(iter(open_calls.values()))}].role")
        if m.role == "assistant" and m.tool_calls:
            for j, raw in enumerate(m.tool_calls):
                call = _tool_call(raw, f"messages[{i}].tool_calls[{j}]")
                open_calls[call.id] = str(i)
        elif m.role == "tool":
            if not m.tool_call_id:
                raise InvalidRequest("Missing required parameter: "
                                     f"'messages[{i}].tool_call_id'.",
                                     f"messages[{i}].tool_call_id")
            if m.tool_call_id not in open_calls:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (no open call with id "
                    f"{m.tool_call_id!r}).", f"messages[{i}].tool_call_id")
            del open_calls[m.tool_call_id]
    # calls still open at the end: the client asks the model to go on without results;
    # OpenAI refuses that too
    if open_calls:
        ids = ", ".join(open_calls)
        raise InvalidRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {ids}", f"messages[{next(iter(open_calls.values()))}].role")


def _tool_call(raw: Any, where: str) -> ToolCall:
    from pydantic import ValidationError

    try:
        return ToolCall.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        param = where + loc
        if err["type"] == "missing":
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param) from None
        raise InvalidRequest(f"Invalid value for '{param}': {err['msg']}.", param) from None


def response_schema(body: ChatCompletionRequest) -> tuple[dict[str, Any] | None, bool, str]:
    """(schema, strict, name) the answer must follow; schema None for free text."""
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None, False, ""
    if rf.type == "json_object":
        # OpenAI refuses JSON mode unless the conversation asks for JSON: without the
        # word the model has no reason to write JSON and fills max_tokens with spaces.
        if not any("json" in m.text().lower() for m in body.messages):
            raise InvalidRequest("'messages' must contain the word 'json' in some form, to use "
                                 "'response_format' of type 'json_object'.", "messages")
        return ANY_OBJECT, False, "json_object"
    js = rf.json_schema
    if js is None:
        raise InvalidRequest("Missing required parameter: 'response_format.json_schema'.",
                             "response_format.json_schema")
    if js.schema_ is None:
        raise InvalidRequest("Missing required parameter: 'response_format.json_schema.schema'.",
                             "response_format.json_schema.schema")
    return js.schema_, bool(js.strict), js.name


def callable_tools(body: ChatCompletionRequest) -> list[Tool]:
    """The tools the model may call in this turn (none for tool_choice "none")."""
    tools = body.tools or []
    if not tools:
        if body.tool_choice is not None:
            raise InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                                 "when 'tools' are specified.", "tool_choice")
        if body.parallel_tool_calls is not None:
            raise InvalidRequest("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' "
                                 "is only allowed when 'tools' are specified.",
                                 "parallel_tool_calls")
        return []
    seen: set[str] = set()
    for i, t in enumerate(tools):
        if t.function.name in seen:
            raise InvalidRequest(f"Invalid value for 'tools[{i}].function.name': the name "
                                 f"{t.function.name!r} is used by another tool.",
                                 f"tools[{i}].function.name")
        seen.add(t.function.name)
    choice = body.tool_choice
    if choice == "none":
        return []
    if choice is not None and not isinstance(choice, str):
        name = choice.function.name
        named = [t for t in tools if t.function.name == name]
        if not named:
            raise InvalidRequest(f"Invalid value for 'tool_choice': no function named {name!r} "
                                 "in 'tools'.", "tool_choice")
        return named
    return list(tools)


# ---- grammar ------------------------------------------------------------------------


def build_grammar(compile: Callable[[GrammarSpec], object], fmt_schema: dict[str, Any] | None,
                  fmt_strict: bool, fmt_name: str, body: ChatCompletionRequest,
                  tools: list[Tool], text_allowed: bool, budget: int | None = None) -> object:
    fmt_what = f"response_format '{fmt_name}'"

    def schema(source: dict[str, Any], strict: bool, param: str, what: str,
               max_tokens: int | None = None) -> object:
        if strict and isinstance(source, dict):
            check_strict_schema(source, param=param, what=what)  # OpenAI's rules, its wording
        return compile(GrammarSpec("json_schema", source, strict, param, what, max_tokens))

    if not tools:
        assert fmt_schema is not None
        if fmt_schema is ANY_OBJECT:
            return compile(GrammarSpec("json_object", max_tokens=budget))
        return schema(fmt_schema, fmt_strict, "response_format", fmt_what, budget)
    # Each schema compiled on its own first: errors then name the exact field, and
    # the grammars are cached for the next request anyway.
    if fmt_schema is not None and fmt_schema is not ANY_OBJECT:
        schema(fmt_schema, fmt_strict, "response_format", fmt_what)
    index = {t.function.name: i for i, t in enumerate(body.tools or [])}
    for t in tools:
        i = index[t.function.name]
        schema(parameters(t), bool(t.function.strict), f"tools[{i}].function.parameters",
               f"function '{t.function.name}'")
    text = tool_grammar(tools, text_allowed, body.parallel_tool_calls is not False,
                        fmt_schema, fmt_strict)
    return compile(GrammarSpec("lark", text, param="tools", max_tokens=budget))


def parameters(tool: Tool) -> dict[str, Any]:
    return tool.function.parameters if tool.function.parameters is not None else NO_PARAMETERS


def tool_grammar(tools: list[Tool], text_allowed: bool, parallel: bool,
                 fmt_schema: dict[str, Any] | None = None, fmt_strict: bool = False) -> str:
    """The Lark grammar of an answer: tool calls, or (if allowed) text or response JSON."""
    lines = [f"start: {'calls | answer' if text_allowed else 'calls'}",
             f"calls: {'call+' if parallel else 'call'}",
             "call: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
    for i, t in enumerate(tools):
        head = json.dumps(_NAME_PREFIX + t.function.name + _ARGS_PREFIX)
        lines.append(f"call_{i}: {head} args_{i} {json.dumps(_CALL_END)}")
        lines.append(f"args_{i}: {lark_json(parameters(t), bool(t.function.strict))}")
    if text_allowed:
        if fmt_schema is None:
            # free text; not starting with "<" keeps a half-written call out of it
            lines.append("answer: TEXT")
            lines.append(r"TEXT: /[^<](.|\n)*/")
        else:
            lines.append(f"answer: {lark_json(fmt_schema, fmt_strict)}")
    return "\n".join(lines) + "\n"


# ---- prompt ------------------------------------------------------------------------


def render_messages(body: ChatCompletionRequest, tools: list[Tool],
                    fmt_schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Messages in roles every chat template knows: system, user, assistant."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        if role == "assistant" and m.tool_calls:
            calls = [ToolCall.model_validate(c) for c in m.tool_calls]
            names.update((c.id, c.function.name) for c in calls)
            out.append({"role": "assistant",
                        "content": m.text() + "".join(_call_text(c) for c in calls)})
        elif role == "tool":
            block = (f'<tool_response name="{names.get(m.tool_call_id or "", "")}">\n'
                     f"{m.text()}\n</tool_response>")
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block  # one user turn for consecutive results
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": role, "content": m.text()})
    for d in out:
        d.pop("_tool_results", None)
    extra = []
    if tools:
        extra.append(tool_instructions(tools, body.tool_choice))
    if fmt_schema is not None and fmt_schema is not ANY_OBJECT:
        extra.append("Answer with a JSON object that matches this JSON schema:\n"
                     + json.dumps(fmt_schema, separators=(",", ":")))
    if extra:
        text = "\n\n".join(extra)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{text}".strip()
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _call_text(call: ToolCall) -> str:
    try:
        args = json.dumps(json.loads(call.function.arguments), separators=(",", ":"))
    except ValueError:
        args = json.dumps(call.function.arguments)  # not JSON: keep it, as a string
    return f'{_NAME_PREFIX}{call.function.name}{_ARGS_PREFIX}{args}{_CALL_END}'


def tool_instructions(tools: list[Tool], choice: Any) -> str:
    specs = "\n".join(
        json.dumps({"name": t.function.name, "description": t.function.description or "",
                    "parameters": parameters(t)}, separators=(",", ":"))
        for t in tools)
    how = ('To call a function, write <tool_call>{"name":"<function name>","arguments":'
           "<arguments as a JSON object>}</tool_call>, one block per call. Results come back "
           "in <tool_response> blocks.")
    if choice in (None, "auto"):
        when = "Call a function when you need it; otherwise answer directly."
    else:
        when = "Call a function now."
    return f"You can call these functions:\n<tools>\n{specs}\n</tools>\n{how}\n{when}"


# ---- output --------------------------------------------------------------------------


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")[:24]


class ToolOutput:
    """Splits one choice's text into content and tool calls, as it streams.

    `feed()` returns the OpenAI deltas for a piece of text: {"content": ...} or
    {"tool_calls": [{index, id, type, function: {name, arguments}}]} when a call
    starts, then {"tool_calls": [{index, function: {arguments}}]} as its arguments
    arrive. The grammar guarantees the envelope; a text cut short (max_tokens)
    leaves a call with partial arguments, as OpenAI does with finish_reason "length".
    """

    def __init__(self, calls_possible: bool, text_allowed: bool = True) -> None:
        self.calls_possible = calls_possible
        # "undecided" until the first characters tell text from a call
        self.state = ("undecided" if text_allowed else "between") if calls_possible else "text"
        self.buf = ""
        self.content = ""
        self.calls: list[dict[str, Any]] = []
        self._depth = 0
        self._in_str = False
        self._esc = False

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.state == "text":
            self.content += text
            return [{"content": text}]
        self.buf += text
        deltas: list[dict[str, Any]] = []
        while self._step(deltas):
            pass
        return deltas

    def close(self) -> list[dict[str, Any]]:
        """End of the choice: whatever is left that is not a call becomes content."""
        if self.state in ("undecided", "junk") and self.buf:
            text, self.buf = self.buf, ""
            self.content += text
            return [{"content": text}]
        return []

    def finish_reason(self, reason: str) -> str:
        return "tool_calls" if self.calls and reason == "stop" else reason

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant",
                               "content": self.content if self.content or not self.calls else None,
                               "refusal": None, "annotations": []}
        if self.calls:
            msg["tool_calls"] = self.calls
        return msg

    # one step of the state machine; True if it consumed something
    def _step(self, deltas: list[dict[str, Any]]) -> bool:
        b = self.buf
        if self.state == "undecided":
            if b.startswith(CALL_OPEN):
                self.state = "between"
                return True
            if CALL_OPEN.startswith(b):
                return False  # could still become a call
            self.state = "text"
            self.buf = ""
            self.content += b
            deltas.append({"content": b})
            return False
        if self.state == "between":
            if b.startswith(_NAME_PREFIX):
                self.buf = b[len(_NAME_PREFIX):]
                self.state = "name"
                return True
            if _NAME_PREFIX.startswith(b):
                return False
            self.state = "junk"  # not a call after all (no grammar enforced it)
            return True
        if self.state == "name":
            end = b.find('"')
            if end < 0:
                return False
            self._name = b[:end]
            self.buf = b[end:]
            self.state = "sep"
            return True
        if self.state == "sep":
            if b.startswith(_ARGS_PREFIX):
                self.buf = b[len(_ARGS_PREFIX):]
                call = {"id": new_call_id(), "type": "function",
                        "function": {"name": self._name, "arguments": ""}}
                self.calls.append(call)
                deltas.append({"tool_calls": [{"index": len(self.calls) - 1, **call,
                                               "function": {"name": self._name,
                                                            "arguments": ""}}]})
                self.state = "args"
                self._depth, self._in_str, self._esc = 0, False, False
                return True
            if _ARGS_PREFIX.startswith(b):
                return False
            self.state = "junk"
            return True
        if self.state == "args":
            n = self._scan_args(b)
            if n:
                piece = b[:n]
                self.calls[-1]["function"]["arguments"] += piece
                deltas.append({"tool_calls": [{"index": len(self.calls) - 1,
                                               "function": {"arguments": piece}}]})
            self.buf = b[n:]
            if self.state == "args":
                return False
            return True
        if self.state == "end":
            if b.startswith(_CALL_END):
                self.buf = b[len(_CALL_END):]
                self.state = "between"
                return True
            if _CALL_END.startswith(b):
                return False
            self.state = "junk"
            return True
        if self.state == "junk":
            # keep anything unparseable as content rather than lose it
            if b:
                self.content += b
                deltas.append({"content": b})
                self.buf = ""
            return False
        return False

    def _scan_args(self, b: str) -> int:
        """How many chars of `b` belong to the arguments JSON; moves to "end" at its close."""
        for i, c in enumerate(b):
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif c == "\\":
                    self._esc = True
                elif c == '"':
                    self._in_str = False
            elif c == '"':
                self._in_str = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                if self._depth == 0:  # the envelope's own "}"
                    self.state = "end"
                    return i
                self._depth -= 1
        return len(b)


def chat_message(plan: Plan, text: str, reason: str) -> tuple[dict[str, Any], str]:
    """The non-streamed `message` and finish_reason of one choice."""
    out = plan.output()
    out.feed(text)
    out.close()
    return out.message(), out.finish_reason(reason)


class StreamDeltas:
    """Per-choice ToolOutput for a streamed response."""

    def __init__(self, plan: Plan, n: int) -> None:
        self.outputs = [plan.output() for _ in range(n)]

    def feed(self, index: int, text: str) -> list[dict[str, Any]]:
        return self.outputs[index].feed(text)

    def finish(self, index: int, reason: str) -> tuple[list[dict[str, Any]], str]:
        out = self.outputs[index]
        return out.close(), out.finish_reason(reason)
