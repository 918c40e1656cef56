"""The Batch API end to end: the unmodified openai client against a real golive server on the
real engine. Files, batches, results matched by custom_id, the request log at the batch price,
every kind of bad input, cancel, expiry, the offline command, and a kill -9 mid-batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import MODEL, Server
from golive.observe.cost import PriceTable
from golive.observe.requestlog import RequestLog

# every test here runs the real engine: through the shared server, its own servers, or
# `golive batch run` in a subprocess (which the marker inference in conftest cannot see)
pytestmark = pytest.mark.server

CHAT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


def chat_line(cid: str, text: str, max_tokens: int = 4, **extra) -> dict:
    return {"custom_id": cid, "method": "POST", "url": CHAT,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}],
                     "max_tokens": max_tokens, "temperature": 0, **extra}}


def jsonl(lines: list) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client, lines: list, purpose: str = "batch", name: str = "in.jsonl"):
    return client.files.create(file=(name, jsonl(lines)), purpose=purpose)


def submit(client, lines: list, endpoint: str = CHAT, **kw):
    f = upload(client, lines)
    return client.batches.create(input_file_id=f.id, endpoint=endpoint,
                                 completion_window="24h", **kw)


def wait(client, batch_id: str, statuses=FINAL, timeout: float = 600, until=None):
    """Poll until a status (or `until`); the timeout only stops a hung run, it times nothing."""
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses or (until is not None and until(b)):
            return b
        assert time.monotonic() < deadline, f"batch still {b.status}: {b}"
        time.sleep(0.1)


def read_lines(client, file_id: str) -> list[dict]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def by_id(lines: list[dict]) -> dict[str, dict]:
    out = {x["custom_id"]: x for x in lines}
    assert len(out) == len(lines), "a custom_id appears twice"
    return out


# ---- the whole flow -------------------------------------------------------------------


def test_chat_batch_flow_with_the_openai_client(server, client):
    lines = [chat_line(f"q{i}", f"Name a color, number {i}.") for i in range(6)]
    lines.append(chat_line("bad", "hi", temperature=5))  # valid line, refused by the endpoint
    f = upload(client, lines)
    assert (f.object, f.purpose, f.status, f.filename) == ("file", "batch", "processed", "in.jsonl")
    assert f.bytes == len(jsonl(lines))
    assert f.expires_at == f.created_at + 30 * 24 * 3600  # OpenAI's default for batch files
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).content == jsonl(lines)

    b = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h",
                              metadata={"job": "colors"})
    assert (b.status, b.endpoint, b.metadata, b.input_file_id) == (
        "validating", CHAT, {"job": "colors"}, f.id)
    assert b.expires_at == b.created_at + 24 * 3600
    b = wait(client, b.id)

    assert b.status == "completed", b
    assert b.model == MODEL and b.errors is None
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (7, 6, 1)
    assert b.created_at <= b.in_progress_at <= b.finalizing_at <= b.completed_at
    assert b.failed_at is None and b.cancelled_at is None and b.expired_at is None

    out = by_id(read_lines(client, b.output_file_id))
    assert set(out) == {f"q{i}" for i in range(6)}
    for cid, o in out.items():
        assert o["id"].startswith("batch_req_") and o["error"] is None
        r = o["response"]
        assert r["status_code"] == 200 and r["request_id"] == r["body"]["id"]
        body = r["body"]
        assert body["object"] == "chat.completion" and body["service_tier"] == "batch"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert body["usage"]["completion_tokens"] <= 4
    assert b.usage.output_tokens == sum(o["response"]["body"]["usage"]["completion_tokens"]
                                        for o in out.values())
    assert b.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"]
                                       for o in out.values())

    # Same shape as the online answer to the same body: the same handler produced it.
    online = json.loads(client.chat.completions.with_raw_response.create(**lines[0]["body"]).text)
    assert set(online) == set(out["q0"]["response"]["body"])
    assert set(online["choices"][0]) == set(out["q0"]["response"]["body"]["choices"][0])

    err = read_lines(client, b.error_file_id)
    assert [e["custom_id"] for e in err] == ["bad"]
    assert err[0]["response"]["status_code"] == 400 and err[0]["error"] is None
    assert err[0]["response"]["body"]["error"]["param"] == "temperature"

    outputs = client.files.retrieve(b.output_file_id)
    assert outputs.purpose == "batch_output" and outputs.filename == f"{b.id}_output.jsonl"

    # Each line is in the request log at the batch tier and the batch price.
    log = RequestLog(f"sqlite:///{server.data_dir / 'requests.db'}")
    try:
        deadline = time.monotonic() + 20
        while len(rows := log.query(client_id=b.id)) < 6:
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
    finally:
        log.close()
    prices = PriceTable.load()
    assert len(rows) == 6 and {r.tier_served for r in rows} == {"batch"}
    for r in rows:
        assert r.status == 200 and r.endpoint == CHAT
        args = (r.model, r.prompt_tokens, r.cached_tokens, r.completion_tokens)
        batch_price = prices.cost(args[0], "batch", *args[1:])
        assert r.cost_usd == pytest.approx(batch_price)
        assert batch_price == pytest.approx(prices.cost(args[0], "default", *args[1:]) / 2)


def test_completions_batch(client):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": f"Once upon a time, {i}", "max_tokens": 3,
                       "temperature": 0}} for i in range(2)]
    b = wait(client, submit(client, lines, endpoint="/v1/completions").id)
    assert b.status == "completed" and b.request_counts.completed == 2
    out = by_id(read_lines(client, b.output_file_id))
    assert {o["response"]["body"]["object"] for o in out.values()} == {"text_completion"}


# ---- bad input --------------------------------------------------------------------------


BAD_FILES = {
    "broken line": ([json.dumps(chat_line("a", "x")), '{"custom_id": "b", "method": '],
                    {"code": "invalid_json_line", "line": 2, "param": None,
                     "message": "This line is not parseable as valid JSON."}),
    "duplicate custom_id": ([chat_line("a", "x"), chat_line("a", "y")],
                            {"code": "duplicate_custom_id", "line": 2, "param": "custom_id",
                             "message": "The custom_id 'a' for this request is a duplicate of "
                                        "another request. The custom_id parameter must be "
                                        "unique for each request in a batch."}),
    "mixed models": ([chat_line("a", "x"),
                      {**chat_line("b", "y"), "body": {**chat_line("b", "y")["body"],
                                                       "model": "gpt-4o-mini"}}],
                     {"code": "mismatched_model", "line": 2, "param": "body.model",
                      "message": "The model 'gpt-4o-mini' for this request does not match the "
                                 "rest of the batch. Each batch must contain requests for a "
                                 "single model."}),
    "wrong url": ([{**chat_line("a", "x"), "url": "/v1/completions"}],
                  {"code": "invalid_url", "line": 1, "param": "url",
                   "message": "The URL provided for this request does not match the batch "
                              "endpoint."}),
    "wrong method": ([{**chat_line("a", "x"), "method": "GET"}],
                     {"code": "invalid_value", "line": 1, "param": "method",
                      "message": "Invalid value: 'GET'. Supported values are: 'POST'."}),
    "unknown model": ([{**chat_line("a", "x"), "body": {**chat_line("a", "x")["body"],
                                                        "model": "gpt-4o-mini"}}],
                      {"code": "model_not_found", "line": 1, "param": "body.model",
                       "message": "The provided model 'gpt-4o-mini' is not supported by the "
                                  "Batch API."}),
    "streaming": ([chat_line("a", "x", stream=True)],
                  {"code": "streaming_unsupported", "line": 1, "param": "body.stream",
                   "message": "Chat Completions: Streaming is not supported in the Batch API."}),
    "empty file": ([], {"code": "empty_file", "line": None, "param": None,
                        "message": "The batch input file is empty."}),
}


def test_bad_inputs_fail_their_batch_and_harm_nothing_else(client):
    good = wait(client, submit(client, [chat_line("g1", "Say hi."), chat_line("g2", "Bye.")]).id)
    assert good.status == "completed"
    good_output = client.files.content(good.output_file_id).content
    files_before = {f.id for f in client.files.list()}

    submitted = {name: submit(client, lines).id for name, (lines, _) in BAD_FILES.items()}
    user_data = upload(client, [chat_line("a", "x")], purpose="user_data")
    submitted["unknown file id"] = client.batches.create(
        input_file_id="file-does-not-exist", endpoint=CHAT, completion_window="24h").id
    submitted["wrong purpose"] = client.batches.create(
        input_file_id=user_data.id, endpoint=CHAT, completion_window="24h").id
    expected = {name: want for name, (_, want) in BAD_FILES.items()}
    expected["unknown file id"] = {"code": "invalid_request", "line": None,
                                   "param": "input_file_id",
                                   "message": "Cannot find file file-does-not-exist."}

    for name, bid in submitted.items():
        b = wait(client, bid)
        assert b.status == "failed", (name, b)
        assert b.failed_at is not None and b.in_progress_at is None, name
        assert b.output_file_id is None and b.error_file_id is None, name
        assert (b.request_counts.total, b.request_counts.completed) == (0, 0), name
        errors = [e.model_dump() for e in b.errors.data]
        if name == "wrong purpose":
            assert errors[0]["code"] == "invalid_request"
            assert errors[0]["param"] == "input_file_id" and "purpose" in errors[0]["message"]
        else:
            assert errors == [expected[name]], name

    # Nothing else was touched: the good batch, its files, and every uploaded input.
    again = client.batches.retrieve(good.id)
    assert again.model_dump() == good.model_dump()
    assert client.files.content(good.output_file_id).content == good_output
    assert files_before <= {f.id for f in client.files.list()}


def test_bad_requests_get_openai_errors_naming_the_field(server, client):
    f = upload(client, [chat_line("a", "x")])

    def bad(call, status: int, param: str | None, code: str | None = None, text: str = ""):
        with pytest.raises(openai.APIStatusError) as e:
            call()
        assert e.value.status_code == status
        err = e.value.body
        err = err.get("error", err) if isinstance(err, dict) else err
        assert err["param"] == param and err["type"] == "invalid_request_error"
        if code:
            assert err["code"] == code
        assert text in err["message"]

    bad(lambda: client.files.retrieve("file-nope"), 404, "id", text="No such File object: file-nope")
    bad(lambda: client.files.content("file-nope"), 404, "id")
    bad(lambda: client.files.delete("file-nope"), 404, "id")
    bad(lambda: client.files.create(file=("x.jsonl", b"{}\n"), purpose="nonsense"), 400,
        "purpose", "invalid_value", "Invalid value: 'nonsense'. Supported values are:")
    bad(lambda: client.files.create(file=("x.jsonl", b"{}\n"), purpose="batch",
                                    expires_after={"anchor": "created_at", "seconds": 60}),
        400, "expires_after.seconds", "integer_below_min_value")
    bad(lambda: client.batches.create(input_file_id=f.id, endpoint="/v1/nope",
                                      completion_window="24h"),
        400, "endpoint", "invalid_value",
        "Invalid value: '/v1/nope'. Supported values are: '/v1/chat/completions'")
    bad(lambda: client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="1h"),
        400, "completion_window", "invalid_value", "Supported values are: '24h'.")
    bad(lambda: client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h",
                                      metadata={"tags": ["a"]}),
        400, "metadata.tags", "invalid_type",
        "Invalid type for 'metadata.tags': expected a string, but got an array instead.")
    bad(lambda: client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h",
                                      metadata={f"k{i}": "v" for i in range(17)}),
        400, "metadata")
    bad(lambda: client.batches.retrieve("batch_nope"), 404, "batch_id",
        text="No batch found with id 'batch_nope'.")
    bad(lambda: client.batches.cancel("batch_nope"), 404, "batch_id")
    bad(lambda: client.batches.list(limit=0), 400, "limit", "integer_below_min_value")
    bad(lambda: client.batches.list(limit=101), 400, "limit", "integer_above_max_value")
    bad(lambda: client.files.list(order="sideways"), 400, "order", "invalid_value")

    raw = httpx.post(server.base + "/v1/batches", json={"endpoint": CHAT,
                                                       "completion_window": "24h"})
    assert raw.status_code == 400 and raw.json()["error"] == {
        "message": "Missing required parameter: 'input_file_id'.",
        "type": "invalid_request_error", "param": "input_file_id",
        "code": "missing_required_parameter"}
    raw = httpx.post(server.base + "/v1/batches", content=b"{nope",
                     headers={"content-type": "application/json"})
    assert raw.status_code == 400 and "JSON" in raw.json()["error"]["message"]
    raw = httpx.post(server.base + "/v1/files", data={"purpose": "batch"},
                     files={"other": ("x", b"1")})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "file"

    done = wait(client, client.batches.create(input_file_id=f.id, endpoint=CHAT,
                                              completion_window="24h").id)
    assert done.status == "completed"
    bad(lambda: client.batches.cancel(done.id), 409, None,
        text="Cannot cancel a batch with status 'completed'.")

    # Deleting a file deletes it, and only it.
    assert client.files.delete(f.id).deleted is True
    bad(lambda: client.files.retrieve(f.id), 404, "id")
    assert client.batches.retrieve(done.id).status == "completed"
    assert read_lines(client, done.output_file_id)[0]["custom_id"] == "a"


def test_list_pagination(client):
    ids = [client.batches.create(input_file_id="file-missing", endpoint=CHAT,
                                 completion_window="24h").id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]  # newest first
    assert page.has_more is True and page.last_id == ids[1]
    nxt = client.batches.list(limit=2, after=page.last_id)
    assert nxt.data[0].id == ids[0]
    # The SDK's auto-pagination walks every page exactly once.
    seen = [b.id for b in client.batches.list(limit=2)]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)

    mine = [upload(client, [chat_line("p", "x")], purpose="user_data").id for _ in range(2)]
    files = client.files.list(limit=1, order="desc", purpose="user_data")
    assert [f.id for f in files.data] == mine[1:] and files.has_more is True
    files = client.files.list(limit=1, order="asc")
    assert len(files.data) == 1 and files.has_more is True
    second = client.files.list(limit=1, order="asc", after=files.data[0].id)
    assert second.data[0].id != files.data[0].id
    assert second.data[0].created_at >= files.data[0].created_at


def test_cancel_keeps_partial_results(server, client):
    lines = [chat_line(f"x{i}", f"Write a sentence about the number {i}.", max_tokens=24)
             for i in range(40)]
    b = submit(client, lines)
    wait(client, b.id, statuses=("in_progress",) + FINAL)
    c = client.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled") and c.cancelling_at is not None
    b = wait(client, b.id)
    assert b.status == "cancelled" and b.cancelled_at >= b.cancelling_at
    assert b.completed_at is None
    n = b.request_counts
    assert n.total == 40 and n.completed < 40  # stopped part way
    # Lines cut off in flight are not failures: they simply never ran.
    assert n.failed == 0 and b.error_file_id is None
    out = by_id(read_lines(client, b.output_file_id)) if b.output_file_id else {}
    assert len(out) == n.completed and set(out) <= {f"x{i}" for i in range(40)}
    assert client.batches.cancel(b.id).status == "cancelled"  # cancelling again is fine
    server.wait_idle()  # the lines in flight were cancelled in the engine too


# ---- offline -------------------------------------------------------------------------------


def golive(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "golive.commands", *args], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, GOLIVE_DATA_DIR=str(data_dir)))


def test_offline_batch_run_and_resume(tmp_path):
    lines = [chat_line(f"o{i}", f"Count to {i}.") for i in range(3)]
    lines.append(chat_line("bad", "x", temperature=9))
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl(lines))
    out = tmp_path / "out.jsonl"
    r = golive("batch", "run", str(src), "-o", str(out), "--slots", "4", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    ok = by_id([json.loads(x) for x in out.read_text().splitlines()])
    err = by_id([json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()])
    assert set(ok) == {"o0", "o1", "o2"} and set(err) == {"bad"}
    assert {o["response"]["body"]["service_tier"] for o in ok.values()} == {"batch"}
    assert err["bad"]["response"]["status_code"] == 400
    # The progress bar (rich, on stderr; not a terminal here, so drawn once at the end)
    # counts every line done of all, with a measured speed; then the summary line.
    said = " ".join(r.stderr.split())
    assert re.search(r"\bbatch\b.* 4/4 \d+ tok/s ", said), r.stderr
    tokens = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in ok.values())
    assert f"3 completed, 1 failed, {tokens} completion tokens" in said, r.stderr

    # Run again: everything is already there, nothing runs twice.
    before = out.read_bytes()
    r = golive("batch", "run", str(src), "-o", str(out), "--slots", "4", data_dir=tmp_path)
    assert r.returncode == 0 and "4 lines already in" in r.stderr, r.stderr
    said = " ".join(r.stderr.split())
    assert " 0/0 " in said and "0 completed, 0 failed, 0 completion tokens" in said, r.stderr
    assert out.read_bytes() == before

    # A bad file is refused with OpenAI's error entries, and nothing is written.
    bad_src = tmp_path / "bad.jsonl"
    bad_src.write_bytes(jsonl([chat_line("a", "x"), chat_line("a", "y")]))
    r = golive("batch", "run", str(bad_src), "-o", str(tmp_path / "bad_out.jsonl"),
               data_dir=tmp_path)
    assert r.returncode == 1 and "duplicate_custom_id" in r.stdout + r.stderr
    assert not (tmp_path / "bad_out.jsonl").exists()


# ---- kill -9 mid-batch, expiry, size limit (own server) ------------------------------------


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Start a server, submit 40 lines, kill -9 it mid-batch, start a new one on the same data
    directory (with a 3-second completion window for batches created from now on)."""
    data = tmp_path_factory.mktemp("golive-batch-crash")
    first = Server(data, "--max-upload-mb", "0.05")
    try:
        c = first.client()
        lines = [chat_line(f"k{i:02d}", f"Give me a fruit, number {i}.", max_tokens=8)
                 for i in range(40)]
        b = submit(c, lines)
        mid = wait(c, b.id, until=lambda x: x.request_counts.completed >= 3)
        first.proc.kill()  # SIGKILL: no shutdown, no flush, nothing
        first.proc.wait()
    finally:
        first.stop()
    second = Server(data, "--max-upload-mb", "0.05", "--batch-window", "3")
    yield second, b.id, mid
    second.stop()


def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(crashed):
    server, batch_id, at_kill = crashed
    assert at_kill.status == "in_progress" and at_kill.request_counts.completed < 40
    c = server.client()
    b = wait(c, batch_id)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (40, 40, 0)
    out = read_lines(c, b.output_file_id)
    ids = [o["custom_id"] for o in out]
    assert len(ids) == 40 and sorted(ids) == [f"k{i:02d}" for i in range(40)]  # once each
    assert all(o["response"]["status_code"] == 200 for o in out)
    assert b.error_file_id is None


def test_lines_not_done_in_the_window_are_batch_expired(crashed):
    server, crash_batch, _ = crashed
    c = server.client()
    wait(c, crash_batch)  # let the resumed batch finish first
    lines = [chat_line(f"e{i}", f"Tell me about the number {i}.", max_tokens=32)
             for i in range(80)]
    b = wait(c, submit(c, lines).id)
    assert b.status == "expired" and b.expired_at is not None, b
    assert b.expires_at - b.created_at == 3
    done = by_id(read_lines(c, b.output_file_id)) if b.output_file_id else {}
    expired = by_id(read_lines(c, b.error_file_id))
    assert len(done) + len(expired) == 80 and not set(done) & set(expired)
    assert len(expired) > 0 and b.request_counts.failed == len(expired)
    assert {e["error"]["code"] for e in expired.values()} == {"batch_expired"}
    server.wait_idle()


def test_oversized_upload_is_refused_and_stores_nothing(crashed):
    server, _, _ = crashed
    c = server.client()
    before = {f.id for f in c.files.list()}
    line = json.dumps(chat_line("big", "x" * 1000))
    data = ("\n".join([line] * 60) + "\n").encode()  # ~66 KB, over the 0.05 MB limit
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("big.jsonl", data), purpose="batch")
    assert e.value.status_code == 413
    assert e.value.body["code"] == "file_too_large" and e.value.body["param"] == "file"
    assert {f.id for f in c.files.list()} == before
    stored = list((server.data_dir / "files").iterdir())
    assert all(not p.name.endswith(".part") for p in stored)
