"""Each grader against known values (pure logic; BERTScore/embeddings on the bundled MiniLM)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from golive.evals import spec as S
from golive.evals.graders import GradeInput, build_grader
from golive.evals.graders.judge import parse_score, parse_verdict, swap_rule
from golive.evals.graders.rouge import UnicodeTokenizer, rouge, sentences_to_lines
from golive.evals.graders.text import extract_json, last_number

FIXTURES = Path(__file__).parent / "fixtures" / "evals"


def grader(**entry):
    g = S.EvalSpec.model_validate({"name": "t", "dataset": "x.jsonl", "variants": [{"name": "v"}],
                                   "graders": [entry]}).graders[0]
    return build_grader(g, FIXTURES, "http://127.0.0.1:1/v1", "judge-model")


def score(g, output, expected=None, **kw) -> float | None:
    return asyncio.run(g.grade(GradeInput(output, expected, **kw), None)).score


# ---- string checks -------------------------------------------------------------------------


def test_equals_contains_regex():
    eq = grader(type="equals")
    assert score(eq, " Paris\n", "Paris") == 1.0
    assert score(eq, "paris", "Paris") == 0.0
    assert score(grader(type="equals", case_insensitive=True), "PARIS", "paris") == 1.0
    assert score(eq, "seven", ["7", "seven"]) == 1.0  # any of several references

    co = grader(type="contains")
    assert score(co, "The capital is Paris.", "Paris") == 1.0
    assert score(co, "The capital is paris.", "Paris") == 0.0
    assert score(grader(type="contains", case_insensitive=True), "PARIS!", "Paris") == 1.0
    assert score(grader(type="contains", value="Sorry"), "Sorry, no.", "x") == 1.0

    rx = grader(type="regex", pattern=r"\b\d{4}-\d{2}-\d{2}\b")
    assert score(rx, "Born on 1990-04-01.") == 1.0
    assert score(rx, "Born in April 1990.") == 0.0
    full = grader(type="regex", pattern="yes|no", fullmatch=True, case_insensitive=True)
    assert score(full, " Yes ") == 1.0
    assert score(full, "yes, sure") == 0.0


def test_json_valid_and_schema():
    jv = grader(type="json_valid")
    assert score(jv, '{"a": 1}') == 1.0
    assert score(jv, "{'a': 1}") == 0.0
    assert score(jv, 'Here: ```json\n{"a": 1}\n```') == 0.0
    assert score(grader(type="json_valid", extract=True), 'Here: ```json\n{"a": 1}\n```') == 1.0
    assert extract_json('The answer is {"x": [1, 2]} as requested') == {"x": [1, 2]}

    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer", "minimum": 0}},
              "required": ["name", "age"]}
    js = grader(type="json_schema", schema=schema)
    assert score(js, '{"name": "Ada", "age": 36}') == 1.0
    g = asyncio.run(js.grade(GradeInput('{"name": "Ada", "age": -1}', None), None))
    assert g.score == 0.0 and g.reason.startswith("age:")
    assert score(js, '{"name": "Ada"}') == 0.0
    assert score(js, "not json") == 0.0
    from_file = grader(type="json_schema", schema_path="person.schema.json")
    assert score(from_file, '{"name": "Ada", "age": 36}') == 1.0


def test_numeric_tolerance():
    assert last_number("3 apples and 4 pears make 7.") == 7.0
    assert last_number("It costs $1,250.50 in total") == 1250.5
    assert last_number("no digits") is None
    exact = grader(type="numeric")
    assert score(exact, "The answer is 42.", 42) == 1.0
    assert score(exact, "The answer is 42.", "42") == 1.0
    assert score(exact, "The answer is 41.", 42) == 0.0
    assert score(grader(type="numeric", tolerance=0.5), "about 41.6", 42) == 1.0
    assert score(grader(type="numeric", relative=0.01), "99.2", 100) == 1.0
    assert score(grader(type="numeric", relative=0.01), "98.9", 100) == 0.0
    assert score(exact, "nothing", 1) == 0.0
    assert score(exact, "5", "five") is None  # a bad reference is not the model's failure


# ---- ROUGE -----------------------------------------------------------------------------------


def test_rouge_textbook_values():
    # rouge-score's README example.
    t, p = "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."
    assert rouge(t, p, "rouge1") == pytest.approx((0.75, 0.6666667, 0.7058824), abs=1e-6)
    assert rouge(t, p, "rougeL") == pytest.approx((0.625, 0.5555556, 0.5882353), abs=1e-6)
    # Lin (2004), section 3.1: reference "police killed the gunman".
    ref = "police killed the gunman"
    assert rouge(ref, "police kill the gunman", "rougeL")[2] == pytest.approx(0.75)
    assert rouge(ref, "the gunman kill police", "rougeL")[2] == pytest.approx(0.5)
    # ROUGE-2: only "the gunman" is a shared bigram of the 3 on each side.
    assert rouge(ref, "police kill the gunman", "rouge2") == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # ROUGE-1 counts tokens with clipping: "the the the" matches "the" once.
    assert rouge("the cat", "the the the", "rouge1")[:2] == pytest.approx((1 / 3, 1 / 2))


def test_rouge_lsum_splits_sentences():
    target = "The cat sat on the mat. The dog ran in the park."
    pred = "The dog ran in the park. The cat sat on the mat."
    assert sentences_to_lines(target).count("\n") == 1
    # rougeL sees one long sequence (order matters); rougeLsum matches sentence by sentence.
    assert rouge(target, pred, "rougeLsum")[2] == pytest.approx(1.0)
    assert rouge(target, pred, "rougeL")[2] < 0.7


def test_rouge_unicode_tokenizer():
    from rouge_score import tokenizers

    default = tokenizers.DefaultTokenizer(use_stemmer=False)
    ours = UnicodeTokenizer()
    for text in ("The quick brown fox, 42 times!", "it's a dog-eat-dog world_view"):
        assert ours.tokenize(text) == default.tokenize(text)
    stem_default = tokenizers.DefaultTokenizer(use_stemmer=True)
    assert UnicodeTokenizer(True).tokenize("running dogs jumped") == \
        stem_default.tokenize("running dogs jumped")
    # The blind spot: rouge-score's default tokenizer drops every non-ASCII letter.
    assert default.tokenize("猫坐在垫子上") == []
    assert ours.tokenize("猫坐在垫子上") == list("猫坐在垫子上")
    assert ours.tokenize("Café naïve GPT4是模型") == ["café", "naïve", "gpt4", "是", "模", "型"]
    assert rouge("猫坐在垫子上", "猫在垫子上", "rouge1", tokenizer="default")[2] == 0.0
    p, r, f = rouge("猫坐在垫子上", "猫在垫子上", "rouge1")
    assert (p, r) == pytest.approx((1.0, 5 / 6))
    assert rouge("Привет мир", "привет, мир!", "rouge1")[2] == 1.0


def test_rouge_grader_best_reference_and_warning(caplog):
    g = grader(type="rouge", variant="rouge1", measure="recall")
    assert score(g, "the cat sat", ["a dog", "the cat sat down"]) == pytest.approx(0.75)
    d = grader(type="rouge", variant="rouge1", tokenizer="default")
    with caplog.at_level("WARNING"):
        assert score(d, "水は湿っている", "水は湿っている") == 0.0
    assert "non-ASCII" in caplog.text


# ---- LLM-as-judge parsing and the pairwise swap rule --------------------------------------


@pytest.mark.parametrize("reply, expected", [
    ("Reasons: The answer is correct and concise.\nScore: 5", 5),
    ("Reasons: misses the second part\nScore: 2/5", 2),
    ('{"reasons": "partly right", "score": 3}', 3),
    ('Sure! ```json\n{"score": "4", "reason": "good"}\n```', 4),
    ("I would rate this answer 4 out of 5.", 4),
    ("**Score:** 3", 3),
    ("Verdict: [[2]]", 2),
    ("4", 4),
    ("Rating: 4.5", 4.5),
    ("Score: 1. Score: 4", 4),  # the last score wins (judges restate)
])
def test_parse_score(reply, expected):
    assert parse_score(reply)[0] == expected


@pytest.mark.parametrize("reply", ["The answer is good.", "Score: 7", "Score: 0", "",
                                   '{"score": true}', "10/10"])
def test_parse_score_not_measured(reply):
    value, why = parse_score(reply)
    assert value is None and why


def test_parse_score_reasons():
    assert parse_score("Reasons: Correct capital.\nScore: 5")[1] == "Correct capital."
    assert parse_score('{"reason": "off topic", "score": 1}') == (1.0, "off topic")


@pytest.mark.parametrize("reply, verdict", [
    ("A is more precise. [[A]]", "A"), ("[[B]]", "B"), ("Both equal. [[C]]", "tie"),
    ("First [[A]] ... on reflection [[B]]", "B"), ("Verdict: B", "B"),
    ("Answer A is better because it is shorter.", "A"), ("A", "A"), ("tie", None),
    ("I cannot decide.", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_swap_rule():
    # Candidate is A in the first call and B in the second.
    assert swap_rule("A", "B") == "win"
    assert swap_rule("B", "A") == "loss"
    assert swap_rule("A", "A") == "tie"  # position bias: always the first answer
    assert swap_rule("B", "B") == "tie"  # always the second answer
    assert swap_rule("tie", "B") == "tie"
    assert swap_rule("A", "tie") == "tie"
    assert swap_rule("tie", "tie") == "tie"


class ScriptedJudge:
    """Replays fixed judge replies and records the prompts (pure logic: the real judge
    against the real server is in test_evals_run.py)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []

    async def __call__(self, base_url, api_key_env, model, messages, params):
        self.prompts.append((model, messages))
        return self.replies.pop(0)


def test_pairwise_grader_asks_both_orders():
    g = grader(type="pairwise", against="v")
    msgs = [{"role": "user", "content": "Capital of France?"}]
    x = GradeInput("Paris", "Paris", messages=msgs, other="Lyon")
    judge = ScriptedJudge(["[[A]]", "[[B]]"])
    out = asyncio.run(g.grade(x, judge))
    assert out.score == 1.0 and out.detail["outcome"] == "win"
    first, second = (m[1][-1]["content"] for m in judge.prompts)
    assert first.index("Paris") < first.index("Lyon")  # candidate shown first...
    assert second.index("Lyon") < second.index("Paris")  # ...then second
    assert judge.prompts[0][0] == "judge-model"  # the default judge model
    # Both orders prefer the first slot: position bias, so a tie.
    assert asyncio.run(g.grade(x, ScriptedJudge(["[[A]]", "[[A]]"]))).score == 0.5
    assert asyncio.run(g.grade(x, ScriptedJudge(["[[B]]", "[[A]]"]))).score == 0.0
    unreadable = asyncio.run(g.grade(x, ScriptedJudge(["[[A]]", "no idea"])))
    assert unreadable.score is None and "verdict" in unreadable.reason
    # Identical answers are a tie without asking the judge.
    silent = ScriptedJudge([])
    same = asyncio.run(g.grade(GradeInput("Paris ", "Paris", messages=msgs, other="Paris"),
                               silent))
    assert same.score == 0.5 and silent.prompts == []


def test_pointwise_judge_normalises_and_keeps_unparseable():
    g = grader(type="judge", criteria="Is the answer correct?",
               judge={"model": "big-judge", "base_url": "http://127.0.0.1:2/v1"})
    x = GradeInput("Paris", "Paris", messages=[{"role": "user", "content": "Capital?"}])
    judge = ScriptedJudge(["Reasons: right.\nScore: 4"])
    out = asyncio.run(g.grade(x, judge))
    assert out.score == pytest.approx(0.75) and out.detail["judge_score"] == 4
    model, msgs = judge.prompts[0]
    assert model == "big-judge"
    assert "Is the answer correct?" in msgs[-1]["content"]
    assert "Reference answer:\nParis" in msgs[-1]["content"]
    bad = asyncio.run(g.grade(x, ScriptedJudge(["Looks fine to me"])))
    assert bad.score is None and bad.detail["judge_reply"] == "Looks fine to me"


# ---- Python function graders ----------------------------------------------------------------


def test_python_grader():
    g = grader(type="python", function="fixture_graders:exact_words", args={"min_words": 2})
    assert score(g, "Paris France", "Paris") == 1.0
    assert score(g, "Paris", "Paris") == 0.5
    fails = asyncio.run(grader(type="python", function="fixture_graders:broken").grade(
        GradeInput("x", "y"), None))
    assert fails.score is None and "ZeroDivisionError" in fails.reason
    out_of_range = asyncio.run(grader(type="python", function="fixture_graders:too_big").grade(
        GradeInput("x", "y"), None))
    assert out_of_range.score is None
    assert score(grader(type="python", function="fixture_graders:kwargs_only"), "a", "b") == 1.0
    sys.modules.pop("fixture_graders", None)


def test_python_grader_bad_reference():
    from golive.evals.errors import EvalError

    with pytest.raises(EvalError, match="no function 'missing'"):
        grader(type="python", function="fixture_graders:missing")
    with pytest.raises(EvalError, match="cannot import module 'no_such_module'"):
        grader(type="python", function="no_such_module:f")


# ---- BERTScore and embedding cosine on the bundled MiniLM ----------------------------------


@pytest.mark.model  # loads the bundled MiniLM
def test_bertscore_known_values():
    from golive.evals.graders.semantic import bertscore

    same, para, other = bertscore(
        ["The cat sat on the mat.", "The cat sat on the mat.", "The cat sat on the mat."],
        ["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock prices fell today."])
    assert same == pytest.approx((1.0, 1.0, 1.0), abs=1e-4)
    assert para[2] > other[2] + 0.2
    g = grader(type="bertscore")
    assert score(g, "The cat sat on the mat.", "The cat sat on the mat.") == pytest.approx(1.0,
                                                                                          abs=1e-4)
    raw = asyncio.run(g.grade(GradeInput("A cat sat on a mat.", "The cat sat on the mat."),
                              None)).detail["raw"]["f1"]
    # Rescaling with a baseline b: (x - b) / (1 - b), bert-score's formula.
    resc = grader(type="bertscore", baseline=[0.2, 0.2, 0.2])
    assert score(resc, "A cat sat on a mat.", "The cat sat on the mat.") == \
        pytest.approx((raw - 0.2) / 0.8, abs=1e-5)


@pytest.mark.model  # loads the bundled MiniLM
def test_bertscore_baseline_from_unrelated_pairs():
    from golive.evals.graders.semantic import bertscore_baseline

    sents = ["The cat sat on the mat.", "Stock prices fell sharply today.",
             "Paris is the capital of France.", "Rain is expected this weekend."]
    p, r, f = bertscore_baseline(sents, pairs=12, seed=1)
    assert 0 <= f < 0.5 and 0 <= p < 0.5 and 0 <= r < 0.5  # unrelated: far below a paraphrase
    with pytest.raises(ValueError, match="two different sentences"):
        bertscore_baseline(["same", "same"])


@pytest.mark.model  # loads the bundled MiniLM
def test_bertscore_idf_weights_rare_words():
    from golive.evals import spec as S2

    g = grader(type="bertscore", idf=True)
    refs = ["the cat sat on the mat", "the dog sat on the mat", "the bird sat on the mat"]
    g.prepare([S2.Example(id=str(i), expected=r) for i, r in enumerate(refs)])
    plain = grader(type="bertscore")
    # Only the rare word differs; idf makes it count for more than the shared words.
    cand, ref = "the cow sat on the mat", "the cat sat on the mat"
    assert score(g, cand, ref) < score(plain, cand, ref)
    assert g.cache_identity() != plain.cache_identity()


@pytest.mark.model  # loads the bundled MiniLM
def test_embedding_cosine():
    g = grader(type="embedding")
    assert score(g, "How do I reset my password?", "How do I reset my password?") == \
        pytest.approx(1.0, abs=1e-4)
    close = score(g, "How can I change my password?", "How do I reset my password?")
    far = score(g, "The weather is sunny in Madrid.", "How do I reset my password?")
    assert close > 0.6 > far
