"""LLM-as-judge graders: pointwise with a rubric (G-Eval style) and pairwise.

Pointwise: the judge gets the criteria, fixed evaluation steps, the task, the
reference and the answer, and replies with reasons and a score from 1 to 5,
normalised to (s - 1) / 4. Judges (small ones especially) reply in many shapes;
`parse_score` accepts JSON, "Score: 4", "4/5", "[[4]]" and a bare digit, and
anything else is "not measured" with the raw reply kept, never a silent 0.

Pairwise: the judge sees both answers twice, in both orders (position bias is
large: GPT-4 kept its verdict after a swap only 65% of the time, Zheng et al.
2023). A win counts only when both orders agree; otherwise it is a tie.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from golive.evals.graders.base import Chat, Grade, GradeInput, Grader
from golive.evals.prompts import expected_text

_DEFAULT_STEPS = [
    "Read the task and, if given, the reference answer.",
    "Check the answer against each evaluation criterion.",
    "Note what the answer gets right and what it gets wrong or leaves out.",
    "Assign a score from 1 (fails the criteria) to 5 (fully meets them).",
]

JUDGE_SYSTEM = "You are a careful, impartial evaluator of answers written by an AI assistant."


def task_text(x: GradeInput) -> str:
    """What the model was asked: the last user turn of the prompt that was sent."""
    for m in reversed(x.messages):
        if m["role"] == "user":
            return m["content"]
    return json.dumps(x.inputs, ensure_ascii=False)


def pointwise_prompt(criteria: str, steps: list[str] | None, task: str, answer: str,
                     reference: str | None) -> list[dict[str, str]]:
    steps_text = "\n".join(f"{i}. {s}" for i, s in enumerate(steps or _DEFAULT_STEPS, 1))
    ref = f"\n\nReference answer:\n{reference}" if reference else ""
    user = (f"Grade one answer.\n\nEvaluation criteria:\n{criteria}\n\n"
            f"Evaluation steps:\n{steps_text}\n\nTask:\n{task}{ref}\n\n"
            f"Answer to grade:\n{answer}\n\n"
            "Reply in exactly this format:\nReasons: <one or two sentences>\n"
            "Score: <an integer from 1 to 5>")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_SCORE_PATTERNS = [
    re.compile(r"score\W{0,3}\s*(?:is\s*)?[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.I),
    re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*5\b", re.I),
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"rating\W{0,3}\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.I),
]


def parse_score(text: str) -> tuple[float | None, str]:
    """(score in 1..5 or None, reasons or why it could not be read) from a judge reply."""
    text = text.strip()
    obj = _json_object(text)
    if obj is not None:
        raw = next((obj[k] for k in ("score", "rating", "result") if k in obj), None)
        reason = next((str(obj[k]) for k in ("reasons", "reason", "explanation", "rationale")
                       if k in obj), "")
        value = _number(raw)
        if value is not None:
            return _in_range(value, reason)
    reasons = _reasons(text)
    for rx in _SCORE_PATTERNS:
        found = rx.findall(text)
        if found:
            return _in_range(float(found[-1]), reasons)
    bare = re.fullmatch(r"\**\s*([1-5])(?:\.0)?\s*\**\.?", text)
    if bare:
        return float(bare[1]), ""
    return None, "the judge's reply holds no score from 1 to 5"


def _in_range(value: float, reasons: str) -> tuple[float | None, str]:
    if 1 <= value <= 5:
        return value, reasons
    return None, f"the judge gave {value:g}, outside 1..5"


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        m = re.match(r"\s*(\d+(?:\.\d+)?)", raw)
        return float(m[1]) if m else None
    return None


def _json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj = decoder.raw_decode(text, m.start())[0]
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _reasons(text: str) -> str:
    m = re.search(r"reasons?\s*[:=]\s*(.*?)(?:\n\s*\**\s*score\b|$)", text, re.I | re.S)
    return (m[1] if m else re.sub(r"(?im)^.*score.*$", "", text)).strip()[:2000]


Verdict = Literal["A", "B", "tie"]


def pairwise_prompt(criteria: str, task: str, a: str, b: str) -> list[dict[str, str]]:
    user = (f"Compare two answers to the same task.\n\nCriteria:\n{criteria}\n\n"
            f"Task:\n{task}\n\n[Answer A]\n{a}\n[End of answer A]\n\n"
            f"[Answer B]\n{b}\n[End of answer B]\n\n"
            "Explain your comparison in one or two sentences, then give your verdict on the "
            'last line, exactly "[[A]]" if answer A is better, "[[B]]" if answer B is '
            'better, or "[[C]]" for a tie.')
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Verdict | None:
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
    if found:
        return _verdict(found[-1])
    m = re.findall(r"(?:verdict|winner|better answer)\W{0,3}\s*(?:is\s*)?[:=]?\s*"
                   r"(?:answer\s*)?\**\s*\b(A|B|C|tie)\b", text, re.I)
    if m:
        return _verdict(m[-1].upper())
    m = re.findall(r"\banswer\s+(A|B)\s+is\s+better\b", text, re.I)
    if m:
        return _verdict(m[-1].upper())
    bare = re.fullmatch(r"\W*(A|B|C)\W*", text.strip())
    return _verdict(bare[1]) if bare else None


def _verdict(letter: str) -> Verdict:
    return {"A": "A", "B": "B"}.get(letter, "tie")  # type: ignore[return-value]


def swap_rule(first: Verdict, second: Verdict) -> Literal["win", "loss", "tie"]:
    """Outcome for the candidate, shown as A in the first call and as B in the second.

    A win or loss needs both orders to agree (Zheng et al. 2023, the
    conservative rule); disagreement or any tie is a tie.
    """
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"


_OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


class _JudgeBase(Grader):
    cacheable = True

    def __init__(self, spec: Any, default_base_url: str, default_model: str):
        super().__init__(spec)
        j = spec.judge
        self.base_url = (j.base_url or default_base_url).rstrip("/")
        self.model = j.model or default_model
        self.api_key_env = j.api_key_env
        self.params = j.parameters.request_kwargs()

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "judge_model": self.model,
                "judge_base_url": self.base_url}

    async def ask(self, chat: Chat, messages: list[dict[str, str]]) -> str:
        return await chat(self.base_url, self.api_key_env, self.model, messages, self.params)


class JudgeGrader(_JudgeBase):
    async def grade(self, x: GradeInput, chat: Chat) -> Grade:
        ref = expected_text(x.expected) if self.spec.include_expected else None
        msgs = pointwise_prompt(self.spec.criteria, self.spec.steps, task_text(x), x.output, ref)
        reply = await self.ask(chat, msgs)
        score, reasons = parse_score(reply)
        if score is None:
            return Grade(None, reasons, {"judge_reply": reply})
        return Grade((score - 1) / 4, f"{score:g}/5: {reasons}",
                     {"judge_score": score, "judge_reply": reply})


class PairwiseGrader(_JudgeBase):
    async def grade(self, x: GradeInput, chat: Chat) -> Grade:
        if x.other is None:
            return Grade(None, "nothing to compare against (this is the baseline variant)")
        if x.output.strip() == x.other.strip():
            # Nothing for a judge to tell apart; asking would only measure position bias.
            return Grade(0.5, f"tie against {self.spec.against} (identical answers)",
                         {"outcome": "tie", "judge_replies": []})
        task, crit = task_text(x), self.spec.criteria
        r1 = await self.ask(chat, pairwise_prompt(crit, task, x.output, x.other))
        r2 = await self.ask(chat, pairwise_prompt(crit, task, x.other, x.output))
        v1, v2 = parse_verdict(r1), parse_verdict(r2)
        detail = {"verdict_candidate_first": v1, "verdict_candidate_second": v2,
                  "judge_replies": [r1, r2]}
        if v1 is None or v2 is None:
            return Grade(None, "the judge's reply holds no [[A]]/[[B]]/[[C]] verdict", detail)
        outcome = swap_rule(v1, v2)
        detail["outcome"] = outcome
        return Grade(_OUTCOME_SCORE[outcome],
                     f"{outcome} against {self.spec.against} (orders: {v1}, {v2})", detail)
