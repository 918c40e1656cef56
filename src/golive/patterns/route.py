"""Don't default to an LLM: rules first, a small model next, a large one last.

`Router` tries deterministic handlers in order (a regex, a lookup table, any
Python function, a small classifier) and only calls the model when none of
them answers; it counts hits per handler so you can see what share of the
traffic never needed a model.

    from openai import OpenAI
    from golive.patterns.route import Router, ModelCall

    router = Router(fallback=ModelCall(OpenAI(base_url=..., api_key=...), "smollm2-135m-instruct"))
    router.regex("hours", r"\\b(opening )?hours\\b", "We are open 9:00-17:00, Monday to Friday.")
    router.lookup("faq", {"what is your phone number?": "+1 555 0100"})
    router.function("math", lambda q: ...)               # return None to pass
    r = router.answer("What are your hours?")           # r.handler == "hours", no model call
    print(router.stats.hits)                            # {"hours": 1, ...}

`Cascade` tries a small model first and escalates to a larger model (or
another backend) when the answer is not trusted: mean or minimum token
logprob below a threshold, or a validator function saying no.

Both work with the sync `OpenAI` and the async `AsyncOpenAI` client, against
golive or any OpenAI-compatible endpoint.
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Answer = str | Callable[..., str]


# ---- model calls -------------------------------------------------------------------


@dataclass
class ModelCall:
    """One chat model behind one client; `params` go to chat.completions.create."""

    client: Any  # openai.OpenAI or openai.AsyncOpenAI
    model: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.model

    def _messages(self, query: str | Sequence[dict]) -> list[dict]:
        msgs = [{"role": "user", "content": query}] if isinstance(query, str) else list(query)
        if self.system:
            msgs = [{"role": "system", "content": self.system}, *msgs]
        return msgs

    @property
    def is_async(self) -> bool:
        from openai import AsyncOpenAI

        # openai wraps `create` in decorators, so look through them too
        return isinstance(self.client, AsyncOpenAI) or inspect.iscoroutinefunction(
            inspect.unwrap(self.client.chat.completions.create))

    def call(self, query: str | Sequence[dict], **extra: Any) -> Any:
        return self.client.chat.completions.create(
            model=self.model, messages=self._messages(query), **{**self.params, **extra})

    async def acall(self, query: str | Sequence[dict], **extra: Any) -> Any:
        if not self.is_async:
            raise TypeError("acall needs an AsyncOpenAI client; use call() with OpenAI")
        return await self.call(query, **extra)


def _text(completion: Any) -> str:
    return completion.choices[0].message.content or ""


# ---- rules first ----------------------------------------------------------------------


@dataclass(slots=True)
class Routed:
    answer: str
    handler: str  # the handler's name, or "model"
    model_called: bool
    completion: Any = None  # the model's response, when it was called


@dataclass
class RouterStats:
    hits: Counter = field(default_factory=Counter)  # handler name (or "model") -> answers
    total: int = 0

    @property
    def rule_hit_rate(self) -> float:
        """Share of queries answered without a model call."""
        return (self.total - self.hits["model"]) / self.total if self.total else 0.0


@dataclass(slots=True)
class _Handler:
    name: str
    fn: Callable[[str], str | None]


class Router:
    def __init__(self, fallback: ModelCall | None = None):
        self.fallback = fallback
        self.handlers: list[_Handler] = []
        self.stats = RouterStats()
        self._lock = threading.Lock()

    # -- handlers (tried in the order added) --

    def add(self, name: str, fn: Callable[[str], str | None]) -> Router:
        if name == "model" or any(h.name == name for h in self.handlers):
            raise ValueError(f"handler name {name!r} is taken")
        self.handlers.append(_Handler(name, fn))
        return self

    def regex(self, name: str, pattern: str | re.Pattern[str], answer: Answer,
              flags: int = re.IGNORECASE) -> Router:
        """Answer when `pattern` matches; `answer` may be a function of the match."""
        pat = re.compile(pattern, flags) if isinstance(pattern, str) else pattern

        def handle(q: str) -> str | None:
            m = pat.search(q)
            if m is None:
                return None
            return answer(m) if callable(answer) else answer
        return self.add(name, handle)

    def lookup(self, name: str, table: Mapping[str, str],
               normalize: Callable[[str], str] | None = None) -> Router:
        """Exact lookup after normalisation (default: case, punctuation and spaces)."""
        norm = normalize or _normalize
        index = {norm(k): v for k, v in table.items()}
        return self.add(name, lambda q: index.get(norm(q)))

    def function(self, name: str, fn: Callable[[str], str | None]) -> Router:
        """Any function: return the answer, or None to pass to the next handler."""
        return self.add(name, fn)

    def classifier(self, name: str, predict: Callable[[str], tuple[str, float]],
                   answers: Mapping[str, Answer], min_confidence: float = 0.8) -> Router:
        """A classifier's label picks a canned answer when it is confident enough.

        `predict(text) -> (label, confidence)`; `ExampleClassifier` is a small
        one built from labelled examples.
        """
        def handle(q: str) -> str | None:
            label, conf = predict(q)
            if conf < min_confidence or label not in answers:
                return None
            a = answers[label]
            return a(q) if callable(a) else a
        return self.add(name, handle)

    # -- answering --

    def try_rules(self, query: str) -> Routed | None:
        for h in self.handlers:
            out = h.fn(query)
            if out is not None:
                self._hit(h.name)
                return Routed(out, h.name, False)
        return None

    def answer(self, query: str, **params: Any) -> Routed:
        """Rules first; the fallback model (sync client) when none answers."""
        hit = self.try_rules(query)
        if hit is not None:
            return hit
        fb = self._fallback()
        completion = fb.call(query, **params)
        self._hit("model")
        return Routed(_text(completion), "model", True, completion)

    async def aanswer(self, query: str, **params: Any) -> Routed:
        """`answer` for an AsyncOpenAI fallback."""
        hit = self.try_rules(query)
        if hit is not None:
            return hit
        completion = await self._fallback().acall(query, **params)
        self._hit("model")
        return Routed(_text(completion), "model", True, completion)

    def _fallback(self) -> ModelCall:
        if self.fallback is None:
            raise LookupError("no rule answered and the router has no fallback model")
        return self.fallback

    def _hit(self, name: str) -> None:
        with self._lock:
            self.stats.hits[name] += 1
            self.stats.total += 1


def _normalize(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class ExampleClassifier:
    """A small text classifier from labelled examples (BM25 nearest examples).

    Confidence is the winning label's share of the top-k example scores, so a
    query that matches one label's examples clearly scores near 1 and a query
    that matches nothing scores 0.
    """

    def __init__(self, examples: Mapping[str, Sequence[str]], k: int = 5):
        import bm25s

        self.labels = [lab for lab, xs in examples.items() for _ in xs]
        docs = [x for xs in examples.values() for x in xs]
        if not docs:
            raise ValueError("no examples")
        self.k = min(k, len(docs))
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(docs, stopwords="en", show_progress=False),
                         show_progress=False)

    def __call__(self, text: str) -> tuple[str, float]:
        import bm25s

        q = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        if not q:
            return "", 0.0
        scores = self._bm25.get_scores(q)
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[: self.k]
        by_label: Counter = Counter()
        for i in top:
            by_label[self.labels[i]] += float(scores[i])
        total = sum(by_label.values())
        if total <= 0:
            return "", 0.0
        label, s = by_label.most_common(1)[0]
        return label, s / total


# ---- cascade ---------------------------------------------------------------------------


Confidence = Callable[[Any], float | None]  # completion -> confidence (None = unknown)


def mean_logprob(completion: Any) -> float | None:
    lps = _logprobs(completion)
    return sum(lps) / len(lps) if lps else None


def min_logprob(completion: Any) -> float | None:
    lps = _logprobs(completion)
    return min(lps) if lps else None


def _logprobs(completion: Any) -> list[float]:
    lp = completion.choices[0].logprobs
    if lp is None or not lp.content:
        return []
    return [t.logprob for t in lp.content if t.logprob is not None and math.isfinite(t.logprob)]


@dataclass(slots=True)
class Attempt:
    stage: str
    text: str
    confidence: float | None
    accepted: bool
    completion: Any


@dataclass(slots=True)
class CascadeResult:
    answer: str
    stage: str  # the stage whose answer was used
    escalated: bool
    attempts: list[Attempt]


@dataclass
class Cascade:
    """Try `stages` in order; accept the first answer that passes the rule.

    The rule: `validator(text) -> bool` if given, and/or a confidence function
    (default mean token logprob, which asks the stage for logprobs) at least
    `threshold`. The last stage's answer is used when nothing passes.
    """

    stages: Sequence[ModelCall]
    threshold: float | None = -1.0
    confidence: Confidence = mean_logprob
    validator: Callable[[str], bool] | None = None
    stats: Counter = field(default_factory=Counter)  # stage label -> answers used

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a cascade needs at least one stage")

    def _extra(self) -> dict[str, Any]:
        return {"logprobs": True} if self.threshold is not None else {}

    def _judge(self, stage: ModelCall, completion: Any) -> Attempt:
        text = _text(completion)
        conf = self.confidence(completion) if self.threshold is not None else None
        ok = True
        if self.threshold is not None:
            ok = conf is not None and conf >= self.threshold
        if self.validator is not None:
            ok = ok and bool(self.validator(text))
        return Attempt(stage.label, text, conf, ok, completion)

    def _finish(self, attempts: list[Attempt]) -> CascadeResult:
        used = next((a for a in attempts if a.accepted), attempts[-1])
        self.stats[used.stage] += 1
        return CascadeResult(used.text, used.stage, len(attempts) > 1, attempts)

    def run(self, query: str | Sequence[dict], **params: Any) -> CascadeResult:
        attempts = []
        for stage in self.stages:
            a = self._judge(stage, stage.call(query, **self._extra(), **params))
            attempts.append(a)
            if a.accepted:
                break
        return self._finish(attempts)

    async def arun(self, query: str | Sequence[dict], **params: Any) -> CascadeResult:
        attempts = []
        for stage in self.stages:
            a = self._judge(stage, await stage.acall(query, **self._extra(), **params))
            attempts.append(a)
            if a.accepted:
                break
        return self._finish(attempts)
