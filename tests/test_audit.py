"""`golive audit` on the request log of a scripted mixed workload against a real server.

Every lever's opportunity is planted once; the audit must find each of them
(and must not flag the planted request chain that really depends on its
previous answer).
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import MODEL, Server
from openai import OpenAI
from typer.testing import CliRunner

from golive.commands import app
from golive.observe.audit import audit, check_sequential
from golive.observe.record import RequestRecord
from golive.observe.requestlog import RequestLog
from golive.patterns.tokens import model_tokenizer

STATIC = ("You are the support assistant of Northern Rivers Heritage. Answer visitors politely "
          "and briefly. Never invent opening hours, prices or dates. Recommend the riverside "
          "path to walkers and the upstream bridge to drivers. Keep answers short.")


def page() -> str:
    nav = "".join(f'<li><a href="/s/{i}">Archive section {i}</a></li>' for i in range(30))
    ads = "".join(f'<div class="ad">Advertisement {i}: cruises {i}0% off</div>' for i in range(6))
    return (f"<html><head><script>track('a');track('b');</script></head><body><nav><ul>{nav}"
            f"</ul></nav><aside>{ads}</aside><main><article><h1>Varnholt bridge</h1><p>The "
            "Varnholt bridge was completed in 1887 after floods delayed the work.</p><p>It "
            "became a footbridge in 1994.</p></article></main><footer>Privacy | Terms"
            "</footer></body></html>")


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("golive-audit"), "--log-bodies")
    try:
        def client(who: str) -> OpenAI:
            return OpenAI(base_url=srv.base + "/v1", api_key=f"test-key-{who}", max_retries=0)

        def chat(c: OpenAI, content, max_tokens: int = 4, **kw):
            msgs = content if isinstance(content, list) else [{"role": "user",
                                                               "content": content}]
            return c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=max_tokens,
                                             **kw)

        planted: dict[str, list[str]] = {}
        agent = client("agnt")  # independent questions, one after another
        planted["parallelize"] = [chat(agent, q).id for q in
                                  ("Name a fruit.", "Name a color.", "Name a city.")]
        chain = client("chan")  # the second question quotes the first answer: a real dependency
        first = chat(chain, "Name an animal.", max_tokens=6)
        second = chat(chain, f"Describe this: {first.choices[0].message.content}")
        planted["dependent"] = [first.id, second.id]
        support = client("supp")  # dynamic content at the top of a static system prompt
        planted["static prefix first"] = [chat(support, [
            {"role": "system", "content": f"Today is 2025-05-0{i + 1}. Request id: "
                                          f"{uuid.uuid4()}\n\n{STATIC}"},
            {"role": "user", "content": f"Question {i}: are you open?"}], max_tokens=1).id
            for i in range(3)]
        faq = client("faqs")  # the same deterministic request twice
        planted["rules / cache before the model"] = [
            chat(faq, "What is the capital of France?", temperature=0).id for _ in range(2)]
        rag = client("ragg")  # a large input that is mostly markup
        planted["fewer input tokens"] = [chat(
            rag, f"{page()}\nWhen was the Varnholt bridge completed?", max_tokens=1).id]
        nightly = client("nite")  # a bulk job, sent all at once, non-streamed
        with ThreadPoolExecutor(5) as pool:
            planted["flex / batch"] = list(pool.map(
                lambda i: chat(nightly, f"Label item {i}: apple", max_tokens=2).id, range(5)))
        writer = client("wrtr")  # an answer that is mostly generation time
        planted["generate fewer tokens"] = [chat(
            writer, "Write a long story about a river.", max_tokens=48).id]

        url = f"sqlite:///{srv.data_dir / 'requests.db'}"
        expected = sum(len(v) for v in planted.values())
        deadline = time.monotonic() + 30
        with RequestLog(url) as log:
            while len(records := log.query(limit=None)) < expected \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        assert len(records) == expected
        yield planted, records, url
    finally:
        srv.stop()


def test_audit_finds_every_planted_opportunity(workload):
    planted, records, _ = workload
    report = audit(records, model_tokenizer())
    assert report.requests == len(records) == report.with_bodies
    for lever in ("parallelize", "static prefix first", "rules / cache before the model",
                  "fewer input tokens", "flex / batch", "generate fewer tokens"):
        f = report.finding(lever)
        assert set(planted[lever]) <= set(f.requests), (lever, f.found)

    par = report.finding("parallelize")
    assert not set(planted["dependent"]) & set(par.requests)  # a real dependency is not flagged
    # the agent's questions, and the support and faq requests (also sent back to back
    # without using each other's answers) form the chains
    assert set(par.requests) == set(planted["parallelize"] + planted["static prefix first"]
                                    + planted["rules / cache before the model"])
    assert par.metrics["chains"] == 3 and par.metrics["parallel_s"] < par.metrics["wall_s"]

    prefix = report.finding("static prefix first")
    assert set(prefix.requests) == set(planted["static prefix first"])
    assert prefix.metrics["extra_cached_tokens"] >= 2 * 40
    assert "date" in prefix.found and prefix.metrics["saving_usd"] > 0

    rep = report.finding("rules / cache before the model")
    assert rep.metrics["repeats"] == 1 and set(rep.requests) == set(planted[
        "rules / cache before the model"])

    big = report.finding("fewer input tokens")
    assert big.requests == planted["fewer input tokens"] and big.metrics["tokens_saved"] > 200

    tiers = report.finding("flex / batch")
    assert set(tiers.requests) == set(planted["flex / batch"])
    assert tiers.metrics["cost_flex"] == pytest.approx(tiers.metrics["cost_now"] / 2)

    out = report.finding("generate fewer tokens")
    assert planted["generate fewer tokens"][0] in out.requests
    assert out.metrics["length_cut"] >= 1


def test_audit_command_prints_the_table_and_writes_html(workload, tmp_path):
    _, _, url = workload
    out = tmp_path / "audit.html"
    r = CliRunner().invoke(app, ["audit", "--log-db", url, "--html", str(out)])
    assert r.exit_code == 0, r.output
    for lever in ("parallelize", "static prefix first", "flex / batch"):
        assert lever in r.output
    page_html = out.read_text()
    assert page_html.count("<svg") == 4 and "fewer input tokens" in page_html
    r = CliRunner().invoke(app, ["audit", "--log-db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert r.exit_code == 2 and "empty" in r.output


def _rec(rid: str, created: float, question: str, answer: str) -> RequestRecord:
    body = {"model": MODEL, "messages": [{"role": "system", "content": STATIC},
                                         {"role": "user", "content": question}]}
    return RequestRecord(rid, created, "/v1/chat/completions", MODEL, "auto", "default",
                         total_s=0.5, client_id="k", request_body=json.dumps(body),
                         response_body=json.dumps({"choices": [  # as the request log keeps it
                             {"index": 0, "content": answer, "finish_reason": "stop"}]}))


@pytest.mark.parametrize("answer", ["You", "Answer", "The capital of France"])
def test_answers_that_echo_shared_text_are_no_dependency(answer):
    # pure logic: a short answer that already occurs in the shared system prompt or the
    # question itself is not evidence that the next request used it
    a = _rec("a", 100.0, "What is the capital of France?", answer)
    b = _rec("b", 100.6, "What is the capital of France?", "Paris.")
    assert set(check_sequential([a, b]).requests) == {"a", "b"}


def test_an_answer_quoted_in_the_next_request_is_a_dependency():
    a = _rec("a", 100.0, "Name an animal.", "A red fox")
    b = _rec("b", 100.6, "Describe this: A red fox", "It is small.")
    assert check_sequential([a, b]).requests == []


def test_without_bodies_the_audit_says_what_it_cannot_see():
    # the server ran without --log-bodies: no check may report a confident zero for
    # something only the bodies show
    def bare(rid: str, created: float, prompt_tokens: int = 30) -> RequestRecord:
        return RequestRecord(rid, created, "/v1/chat/completions", MODEL, "auto", "default",
                             total_s=0.5, ttft_s=0.1, client_id="k",
                             prompt_tokens=prompt_tokens, completion_tokens=5)

    records = [bare("a", 100.0), bare("b", 100.6), bare("c", 101.2, prompt_tokens=900)]
    report = audit(records)
    assert report.with_bodies == 0
    out = report.finding("generate fewer tokens")
    assert "max_tokens: unknown" in out.found and "--log-bodies" in out.found
    assert "set no max_tokens" not in out.found and "no_max_tokens" not in out.metrics
    assert out.metrics["output_share"] == pytest.approx(0.8)  # timings need no bodies
    for lever in ("static prefix first", "parallelize", "rules / cache before the model",
                  "fewer input tokens"):
        f = report.finding(lever)
        assert f.unknown and "unknown" in f.found and "--log-bodies" in f.found, (lever, f.found)
        assert not f.requests
    assert not report.finding("flex / batch").unknown  # tiers and timing are always logged

    # and the terminal says so instead of "0 requests set no max_tokens"
    from rich.console import Console

    from golive.observe.audit import print_report

    console = Console(width=200, record=True)
    print_report(report, console)
    text = console.export_text()
    assert "0 requests set no max_tokens" not in text and "--log-bodies" in text


def test_with_some_bodies_the_audit_says_how_many_it_checked():
    import dataclasses

    logged = dataclasses.replace(_rec("a", 100.0, "What is the capital of France?", "Paris."),
                                 ttft_s=0.1)
    bare = RequestRecord("b", 100.6, "/v1/chat/completions", MODEL, "auto", "default",
                         total_s=0.5, ttft_s=0.1, client_id="k")
    out = audit([logged, bare]).finding("generate fewer tokens")
    assert "1 of the 1 requests with logged bodies set no max_tokens (1 not logged)" in out.found
    assert out.unknown and out.metrics["no_max_tokens"] == 1
