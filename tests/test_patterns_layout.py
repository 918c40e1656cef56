"""golive.patterns.layout and `golive lint-prompt`: dynamic-before-static, shared prefix."""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from pathlib import Path

import pytest
from conftest import MODEL, Server
from typer.testing import CliRunner

from golive.commands import app
from golive.patterns import layout
from golive.patterns.tokens import encode_chat, model_tokenizer

FIX = Path(__file__).parent / "fixtures" / "patterns"
STATIC = ("You are the support assistant of Northern Rivers Heritage. Answer visitors politely "
          "and briefly. Never invent opening hours, prices or dates. Recommend the riverside "
          "path to walkers and the upstream bridge to drivers. Keep answers short.")


@pytest.fixture(scope="module")
def tok():
    return model_tokenizer()


def dynamic_first(i: int, static: str = STATIC) -> list[dict]:
    return [{"role": "system",
             "content": f"Today is 2025-04-{i + 1:02d}. Request id: {uuid.uuid4()}\n\n{static}"},
            {"role": "user", "content": f"Question number {i}: are you open?"}]


def test_detectors_flag_per_request_values_and_not_static_text():
    assert layout.detect("Today is 2025-03-14.")
    assert layout.detect("It is March 3, 2025 at 10:15 am")
    assert layout.detect("trace 550e8400-e29b-41d4-a716-446655440000")
    assert layout.detect("order id: A-99812")
    assert layout.detect("Answer this: {question}")
    assert layout.detect("Hello {{ user_name }}")
    assert not layout.detect(STATIC)
    assert not layout.detect("Rules:\n- keep it short\n- be kind")


def test_lint_flags_dynamic_first_and_proposes_static_first(tok):
    msgs = dynamic_first(0)
    rep = layout.lint_prompt(msgs, tok)
    assert not rep.ok
    [f] = rep.findings
    assert (f.message, f.role, f.paragraph) == (0, "system", 0)
    assert {"date", "id"} <= set(f.kinds)
    assert f.static_tokens_after == len(tok.encode(STATIC)) == rep.static_tokens_after_dynamic
    sys_text = rep.reordered[0]["content"]
    assert sys_text.startswith(STATIC) and "Request id:" in sys_text.split("\n\n")[-1]
    assert rep.reordered[1] == msgs[1]  # the final user turn is left alone
    # the proposal itself lints clean, and so does a static-only prompt
    assert layout.lint_prompt(rep.reordered, tok).ok
    assert layout.lint_prompt([{"role": "system", "content": STATIC},
                               {"role": "user", "content": "Hi, today is 2025-01-01"}], tok).ok


def test_plain_text_prompt_is_linted_by_paragraph(tok):
    text = (FIX / "dynamic_first_prompt.txt").read_text()
    rep = layout.lint_prompt(text, tok)
    assert [f.paragraph for f in rep.findings] == [0]
    out = rep.reordered[0]["content"]
    # static paragraphs first, the dated line and the placeholder after them
    assert out.index("You are the support assistant") < out.index("Today is 2025-03-14")
    assert out.index("Rules:") < out.index("{question}")


def test_shared_prefix_is_measured_and_the_reordering_recovers_it(tok):
    reqs = [dynamic_first(i) for i in range(5)]
    stats = layout.analyze_requests(reqs, tok)
    assert stats.requests == 5
    assert stats.prompt_tokens == sum(len(encode_chat(tok, r)) for r in reqs)
    static_len = len(tok.encode(STATIC))
    # dynamic first: only the template's opening and "Today is 2025-04-0" are shared
    assert stats.cacheable_tokens < 4 * 20
    # static first: each later request reuses at least the static system text
    assert stats.cacheable_tokens_reordered >= 4 * static_len
    assert stats.gain_tokens > 0 and stats.share_reordered > stats.share
    assert list(stats.findings.values()) == [5]


def test_values_that_vary_between_requests_are_found_without_a_pattern(tok):
    names = ["Alice", "Bob", "Chandra", "Dmitri"]
    reqs = [[{"role": "system", "content": f"The customer is {n}.\n\n{STATIC}"},
             {"role": "user", "content": "Hi"}] for n in names]
    assert layout.lint_prompt(reqs[0], tok).ok  # no pattern knows a name...
    stats = layout.analyze_requests(reqs, tok)  # ...but it differs between requests
    assert stats.findings and stats.gain_tokens > 0


def test_cacheable_prefix_tokens_is_a_trie_match():
    assert layout.cacheable_prefix_tokens([[1, 2, 3], [1, 2, 4], [1, 2, 4, 5], [9]]) == \
        [0, 2, 3, 0]


def test_load_requests_accepts_text_json_and_jsonl():
    assert layout.load_requests("hello there") == [[{"role": "user", "content": "hello there"}]]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert layout.load_requests(json.dumps(body)) == [body["messages"]]
    assert layout.load_requests(json.dumps(body["messages"])) == [body["messages"]]
    lines = "\n".join(json.dumps(b) for b in (body, {"custom_id": "1", "body": body}))
    assert layout.load_requests(lines) == [body["messages"]] * 2
    with pytest.raises(ValueError, match="line 2"):
        layout.load_requests(json.dumps(body) + "\n{\"nope\": 1}")
    with pytest.raises(ValueError, match="empty"):
        layout.load_requests("  \n")


# ---- the command ------------------------------------------------------------------


@pytest.mark.model  # lint-prompt counts tokens with the model's tokenizer
def test_cli_flags_a_file_and_exits_1(tmp_path):
    r = CliRunner().invoke(app, ["lint-prompt", str(FIX / "dynamic_first_prompt.txt")])
    assert r.exit_code == 1, r.output
    assert "date" in r.output and "proposed order" in r.output
    clean = tmp_path / "clean.txt"
    clean.write_text(STATIC)
    r = CliRunner().invoke(app, ["lint-prompt", str(clean)])
    assert r.exit_code == 0, r.output


@pytest.mark.model  # lint-prompt counts tokens with the model's tokenizer
def test_cli_reads_jsonl_from_stdin_and_prints_json():
    jsonl = "\n".join(json.dumps({"model": MODEL, "messages": dynamic_first(i)})
                      for i in range(3))
    r = CliRunner().invoke(app, ["lint-prompt", "-", "--json", "--exit-zero"], input=jsonl)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["requests"] == 3
    assert out["cacheable_tokens_reordered"] > out["cacheable_tokens"]
    assert out["reordered"][0]["content"].startswith(STATIC)


def test_cli_bad_input_is_a_clear_usage_error(tmp_path):
    r = CliRunner().invoke(app, ["lint-prompt", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "missing.txt" in r.output
    r = CliRunner().invoke(app, ["lint-prompt"])
    assert r.exit_code == 2 and "--log" in r.output


# ---- from the request log of a real server ---------------------------------------------


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("golive-layout"), "--log-bodies", "--slots", "2")
    yield s
    s.stop()


def test_shared_prefix_from_the_request_log_matches_the_server_cache(logged_server, tok):
    client = logged_server.client()
    # a fresh revision word per run (letters only: a long number would look dynamic)
    static = f"{STATIC} (revision {''.join(random.choices(string.ascii_lowercase, k=6))})"
    reordered_cached = 0
    dyn = [dynamic_first(i, static) for i in range(3)]
    for msgs in dyn:
        client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
    url = f"sqlite:///{logged_server.data_dir / 'requests.db'}"
    deadline = time.monotonic() + 20  # the log is written in the background
    while len(reqs := layout.requests_from_log(url)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reqs == dyn
    stats = layout.analyze_requests(reqs, tok)
    assert stats.gain_tokens >= 2 * len(tok.encode(static))
    # send the proposed order: the server's prefix cache serves what the trie predicts
    # for this history (the dynamic-first requests, then the reordered ones)
    reordered = [layout.lint_prompt(m, tok).reordered for m in dyn]
    for msgs in reordered:
        r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
        reordered_cached += r.usage.prompt_tokens_details.cached_tokens
    history = [encode_chat(tok, m) for m in dyn + reordered]
    predicted = sum(layout.cacheable_prefix_tokens(history)[3:])
    assert predicted > 2 * len(tok.encode(static))
    assert abs(reordered_cached - predicted) <= 3

    deadline = time.monotonic() + 20
    while len(layout.requests_from_log(url)) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    r = CliRunner().invoke(app, ["lint-prompt", "--log", "--log-db", url, "--json",
                                 "--exit-zero"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["requests"] == 6
