"""golive.patterns.route: rules before the model, and a small-model-first cascade."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import httpx
import pytest
from conftest import MODEL

from golive.patterns.route import (
    Cascade,
    ExampleClassifier,
    ModelCall,
    Router,
    mean_logprob,
    min_logprob,
)


def served_requests(server) -> float:
    """Requests the server has finished, from its Prometheus counter."""
    text = httpx.get(server.base + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^golive_requests_total\{[^}]*\} (\S+)$", text,
                                            re.M))


def classifier() -> ExampleClassifier:
    return ExampleClassifier({
        "refund": ["I want my money back", "how do I get a refund", "refund my order please",
                   "return this item for a refund"],
        "shipping": ["where is my parcel", "when will my order arrive", "track my delivery",
                     "shipping takes too long"],
    })


def build_router(fallback=None) -> Router:
    r = Router(fallback)
    r.regex("hours", r"\bopening hours\b", "9:00-17:00")
    r.regex("order", r"\border (\d+)\b", lambda m: f"order {m.group(1)} has shipped")
    r.lookup("faq", {"What is your phone number?": "+1 555 0100"})
    r.function("sum", lambda q: str(sum(map(int, re.findall(r"\d+", q))))
               if q.lower().startswith("add ") else None)
    r.classifier("intent", classifier(), {"refund": "Refunds: see /refunds.",
                                          "shipping": "Track parcels at /track."},
                 min_confidence=0.6)
    return r


def test_example_classifier_is_confident_only_on_its_labels():
    clf = classifier()
    label, conf = clf("can I get a refund for my order")
    assert label == "refund" and conf > 0.6
    assert clf("my parcel delivery is late")[0] == "shipping"
    assert clf("tell me a poem about the sea")[1] == 0.0  # shares no word with any example


def test_rules_answer_without_any_model_call(server):
    client = server.client()
    router = build_router(ModelCall(client, MODEL, params={"max_tokens": 8, "temperature": 0}))
    before = served_requests(server)
    cases = {
        "What are your opening hours?": ("hours", "9:00-17:00"),
        "Status of order 4411?": ("order", "order 4411 has shipped"),
        "what is your PHONE number": ("faq", "+1 555 0100"),
        "add 2 and 40": ("sum", "42"),
        "please refund my order, I want my money back": ("intent", "Refunds: see /refunds."),
    }
    for q, (handler, answer) in cases.items():
        r = router.answer(q)
        assert (r.handler, r.answer, r.model_called) == (handler, answer, False), q
    assert served_requests(server) == before
    assert router.stats.hits == {"hours": 1, "order": 1, "faq": 1, "sum": 1, "intent": 1}
    assert router.stats.rule_hit_rate == 1.0


def test_unmatched_queries_fall_back_to_the_model(server):
    client = server.client()
    router = build_router(ModelCall(client, MODEL, system="Answer in one word.",
                                    params={"max_tokens": 8, "temperature": 0}))
    router.answer("What are your opening hours?")
    before = served_requests(server)
    r = router.answer("Name a color.")
    assert r.handler == "model" and r.model_called and r.answer
    assert r.completion.usage.completion_tokens <= 8
    assert served_requests(server) == before + 1
    assert router.stats.hits["model"] == 1 and router.stats.rule_hit_rate == 0.5


def test_async_router_with_asyncopenai(server):
    router = build_router(ModelCall(server.aclient(), MODEL, params={"max_tokens": 4}))

    async def go():
        return await router.aanswer("add 1 2 3"), await router.aanswer("Say hi.")

    rule, model = asyncio.run(go())
    assert (rule.handler, rule.answer) == ("sum", "6")
    assert model.handler == "model" and model.completion.usage.completion_tokens <= 4


def test_router_errors_are_clear():
    with pytest.raises(LookupError, match="no fallback"):
        build_router().answer("something no rule knows")
    with pytest.raises(ValueError, match="taken"):
        build_router().regex("hours", "x", "y")
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        asyncio.run(ModelCall(object.__new__(_SyncClient), MODEL).acall("x"))


class _SyncClient:
    class chat:  # noqa: N801 - mirrors the openai client's attribute path
        class completions:  # noqa: N801
            @staticmethod
            def create(**kw):
                raise AssertionError("not called")


# ---- cascade ----------------------------------------------------------------------------


def stages(client) -> list[ModelCall]:
    return [ModelCall(client, MODEL, params={"max_tokens": 6, "temperature": 0}, name="small"),
            ModelCall(client, MODEL, params={"max_tokens": 10, "temperature": 0}, name="large")]


ASK = "Name three fruits."


class _KnownLogprobs:
    """A chat client whose every stage answers with the token logprobs given per query."""

    def __init__(self, logprobs: dict[str, list[float]]):
        self.logprobs = logprobs
        self.asked: list[tuple[str, bool]] = []  # (query, logprobs asked for)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, *, model: str, messages: list[dict], logprobs: bool = False, **kw):
        query = messages[-1]["content"]
        self.asked.append((query, logprobs))
        content = [SimpleNamespace(token="t", logprob=x) for x in self.logprobs[query]]
        return SimpleNamespace(choices=[SimpleNamespace(
            message=SimpleNamespace(content=f"answer to {query}"),
            logprobs=SimpleNamespace(content=content) if logprobs else None)])


def test_cascade_accepts_by_the_logprob_rule():
    # mean -0.2 passes -1.0, mean -2.0 does not; [-0.1, -1.9] has mean -1.0 (passes) but
    # min -1.9 (fails): the confidence function, not the stage order, decides.
    client = _KnownLogprobs({"sure": [-0.1, -0.3], "unsure": [-1.5, -2.5],
                             "one slip": [-0.1, -1.9]})
    casc = Cascade(stages(client), threshold=-1.0)
    sure = casc.run("sure")
    assert [(a.stage, a.accepted) for a in sure.attempts] == [("small", True)]
    assert sure.stage == "small" and not sure.escalated and sure.answer == "answer to sure"
    assert sure.attempts[0].confidence == pytest.approx(-0.2)
    unsure = casc.run("unsure")
    assert [(a.stage, a.accepted) for a in unsure.attempts] == [("small", False),
                                                                ("large", False)]
    assert unsure.stage == "large" and unsure.escalated
    assert unsure.attempts[0].confidence == pytest.approx(-2.0)
    assert casc.run("one slip").stage == "small"
    strict = Cascade(stages(client), threshold=-1.0, confidence=min_logprob)
    slip = strict.run("one slip")
    assert slip.escalated and slip.attempts[0].confidence == pytest.approx(-1.9)
    assert casc.stats == {"small": 2, "large": 1}
    assert all(asked for _, asked in client.asked)  # a threshold asks every stage for logprobs


SURE, UNSURE = "Say OK.", "Write a random word."


def test_cascade_on_the_server_keeps_the_sure_answer_and_escalates_the_unsure_one(server):
    client = server.client()
    small = stages(client)[0]
    conf = {q: mean_logprob(small.call(q, logprobs=True)) for q in (SURE, UNSURE)}
    # measured on the default 135M model: about -0.69 and -1.93
    assert conf[SURE] - conf[UNSURE] > 0.5, conf
    threshold = (conf[SURE] + conf[UNSURE]) / 2
    casc = Cascade(stages(client), threshold=threshold)
    sure, unsure = casc.run(SURE), casc.run(UNSURE)
    assert [a.stage for a in sure.attempts] == ["small"] and sure.attempts[0].accepted
    assert sure.attempts[0].confidence == pytest.approx(conf[SURE], abs=0.2)
    assert [a.stage for a in unsure.attempts] == ["small", "large"]
    assert not unsure.attempts[0].accepted and unsure.stage == "large"
    assert unsure.attempts[0].confidence < threshold
    for r in (sure, unsure):  # the rule is applied to the response's own logprobs
        first = r.attempts[0]
        assert first.confidence == mean_logprob(first.completion)
        assert min_logprob(first.completion) <= first.confidence <= 0


def test_cascade_escalates_when_confidence_is_too_low(server):
    casc = Cascade(stages(server.client()), threshold=0.5)  # logprobs are <= 0: never met
    r = casc.run(ASK)
    assert r.escalated and [a.stage for a in r.attempts] == ["small", "large"]
    assert r.stage == "large" and r.answer == r.attempts[-1].text
    assert casc.stats == {"large": 1}
    sure = Cascade(stages(server.client()), threshold=float("-inf"))
    r = sure.run(ASK)
    assert not r.escalated and r.stage == "small" and len(r.attempts) == 1


def test_cascade_with_a_validator_and_async_client(server):
    calls = []

    def is_number(text: str) -> bool:
        calls.append(text)
        return text.strip().isdigit()

    casc = Cascade(stages(server.aclient()), threshold=None, validator=is_number)
    r = asyncio.run(casc.arun("Write a greeting."))
    assert [a.accepted for a in r.attempts] == [False, False] and r.stage == "large"
    assert calls == [a.text for a in r.attempts]
    assert r.attempts[0].confidence is None  # no logprobs asked for without a threshold
    assert r.attempts[0].completion.choices[0].logprobs is None
    ok = Cascade(stages(server.aclient()), threshold=None, validator=lambda t: len(t) > 0)
    r = asyncio.run(ok.arun("Write a greeting."))
    assert r.stage == "small" and not r.escalated
