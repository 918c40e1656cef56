"""Engine results -> OpenAI JSON shapes (usage, logprobs, chunks)."""

from __future__ import annotations

import json

from golive.engine.types import TokenLogprob, Usage


def usage_dict(u: Usage) -> dict:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": u.accepted_prediction_tokens,
            "rejected_prediction_tokens": u.rejected_prediction_tokens,
        },
    }


def chat_logprobs(items: list[TokenLogprob]) -> dict:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": lp.bytes,
                "top_logprobs": [{"token": t, "logprob": v, "bytes": b} for t, v, b in lp.top],
            }
            for lp in items
        ],
        "refusal": None,
    }


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict:
    """Legacy completions format: parallel lists, text offsets from `offset`."""
    tokens, lps, tops, offsets = [], [], [], []
    pos = offset
    for lp in items:
        tokens.append(lp.token)
        lps.append(lp.logprob)
        tops.append({t: v for t, v, _ in lp.top})
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
