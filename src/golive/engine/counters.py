"""The engine's running totals, read by stats() for /metrics and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    prompt_tokens: int = 0  # prompt tokens of admitted requests
    cached_tokens: int = 0  # of those, copied from the prefix cache
    generated_tokens: int = 0
    steps: int = 0  # llama_decode calls that completed
    preemptions: int = 0
    aborted_steps: int = 0  # lower-tier steps stopped for a priority arrival
    draft_proposed: int = 0
    draft_accepted: int = 0
