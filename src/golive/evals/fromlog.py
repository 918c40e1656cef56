"""Eval sets from production traffic: sample the request log, then label.

`golive serve --log-bodies` stores each request and response. `sample_from_log`
draws a random sample of successful chat/completions requests and writes them
in the dataset format, the logged answer as a draft `expected` marked
`label: unreviewed`; `label_examples` walks a person through accepting,
correcting or dropping each draft.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from golive.evals.dataset import Example
from golive.observe.record import RequestRecord
from golive.observe.requestlog import RequestLog

UNREVIEWED = "unreviewed"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def example_from_record(rec: RequestRecord) -> Example | None:
    """The request as template inputs, the logged answer as draft expected; None if unusable."""
    try:
        req = json.loads(rec.request_body or "")
        resp = json.loads(rec.response_body or "")
    except json.JSONDecodeError:
        return None
    choices = resp.get("choices") or []
    if not choices:
        return None
    answer = choices[0].get("content", choices[0].get("text"))
    inputs: dict[str, Any] = {}
    if "messages" in req:
        msgs = [{"role": m.get("role"), "content": _text(m.get("content"))}
                for m in req["messages"]]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        systems = [m["content"] for m in msgs if m["role"] in ("system", "developer")]
        if not users:
            return None
        inputs = {"input": users[-1], "messages": msgs}
        if systems:
            inputs["system"] = systems[0]
    elif isinstance(req.get("prompt"), str):
        inputs = {"input": req["prompt"]}
    else:
        return None
    return Example(id=rec.id, inputs=inputs, expected=answer,
                   metadata={"source": "request-log", "request_id": rec.id, "model": rec.model,
                             "created": rec.created, "label": UNREVIEWED})


def sample_from_log(n: int, seed: int = 0, since: float | None = None,
                    until: float | None = None, model: str | None = None,
                    db: str | None = None) -> tuple[list[Example], int]:
    """(a random sample of up to n usable logged requests, how many had bodies)."""
    with RequestLog(db) as log:
        records = [r for endpoint in ("/v1/chat/completions", "/v1/completions")
                   for r in log.query(since=since, until=until, model=model, endpoint=endpoint,
                                      status=200, limit=None)]
    usable = [ex for ex in (example_from_record(r) for r in records if r.request_body)
              if ex is not None]
    usable.sort(key=lambda e: e.id or "")  # the sample must not depend on query order
    rng = random.Random(seed)
    return (rng.sample(usable, min(n, len(usable))), len(usable))


Ask = Callable[[Example, int, int], tuple[str, str | None]]


def label_examples(examples: list[Example], ask: Ask,
                   save: Callable[[list[Example]], None]) -> dict[str, int]:
    """Walk the unreviewed examples; `ask` returns (action, new expected) where action is
    accept, edit, reject, skip or quit. Saves after every decision, so quitting loses nothing."""
    counts = {"accepted": 0, "edited": 0, "rejected": 0, "skipped": 0}
    todo = [e for e in examples if e.metadata.get("label") == UNREVIEWED]
    kept = list(examples)
    for i, ex in enumerate(todo, 1):
        action, new = ask(ex, i, len(todo))
        if action == "quit":
            break
        if action == "accept":
            ex.metadata["label"] = "accepted"
            counts["accepted"] += 1
        elif action == "edit":
            ex.expected = new
            ex.metadata["label"] = "edited"
            counts["edited"] += 1
        elif action == "reject":
            kept.remove(ex)
            counts["rejected"] += 1
        else:
            counts["skipped"] += 1
            continue
        save(kept)
    return counts
