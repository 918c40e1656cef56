"""`golive levers demo` against the session's real server, at a small scale.

Only load-independent columns are asserted (tokens, requests, cost, cached
tokens); latencies are reported by the demo, never checked here.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import MODEL

from golive.levers_demo import LEVERS, DemoConfig, markdown_table, run_demo, update_doc
from golive.observe.cost import PriceTable


def test_levers_demo_measures_every_lever(server, tmp_path):
    server.wait_idle()
    cfg = DemoConfig(parallel_calls=2, layout_requests=3, router_queries=6, tier_requests=1,
                     unbounded_cap=48)
    results = asyncio.run(run_demo(server.base, cfg))
    by = {r.lever: r for r in results}
    assert list(by) == list(LEVERS)
    for r in results:
        assert r.before.latency_s > 0 and r.after.latency_s > 0, r.lever

    par = by["parallelize"]
    assert par.before.requests == par.after.requests == 2
    assert 0 < par.after.completion_tokens <= 2 * 24

    comp = by["fewer input tokens"]
    assert comp.after.prompt_tokens < comp.before.prompt_tokens / 4
    assert comp.note == "answer-bearing chunk kept: True"

    lay = by["static prefix first"]
    assert lay.after.cached_tokens > lay.before.cached_tokens + 2 * 100
    assert lay.after.prompt_tokens == lay.before.prompt_tokens  # same content, other order
    assert lay.after.cost_usd < lay.before.cost_usd  # cached input is cheaper

    route = by["rules before the model"]
    assert route.before.requests == 6 and route.after.requests == 1  # 5 of 6 hit a rule
    assert route.after.cost_usd < route.before.cost_usd

    stream = by["stream the answer"]
    assert stream.before.requests == stream.after.requests == 1
    assert stream.after.ttfts and stream.after.latency_s == stream.after.ttfts[0]
    assert stream.after.completion_tokens > 0  # usage arrives in the last streamed chunk

    cap = by["generate fewer tokens"]
    assert cap.after.completion_tokens <= 32 < cap.before.completion_tokens <= 48

    # the server charged each tier at its own rate (cost is linear in the token counts)
    tiers = by["flex / batch price"]
    prices = PriceTable.load()
    for m, tier in ((tiers.before, "default"), (tiers.after, "flex")):
        assert m.cost_usd == pytest.approx(prices.cost(MODEL, tier, m.prompt_tokens,
                                                       m.cached_tokens, m.completion_tokens))
    assert "batch API" in tiers.note

    doc = tmp_path / "levers.md"
    doc.write_text("# Levers\n\n<!-- levers:demo -->\nold\n<!-- /levers:demo -->\ntail\n")
    update_doc(doc, results, "Measured.\n")
    text = doc.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert markdown_table(results) in text and text.count("| parallelize |") == 1
