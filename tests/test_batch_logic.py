"""Batch logic without the engine: line validation, the store's exactly-once rule, and the
runner's resume and finalize steps (with a stand-in executor: these tests are about the
bookkeeping, the end-to-end tests in test_batch.py run the real engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from golive.batch import store as st
from golive.batch.execute import response_result
from golive.batch.files import FileBytes
from golive.batch.offline import read_done
from golive.batch.runner import BatchRunner
from golive.batch.store import BatchRow, BatchStore, FileRow, Line
from golive.batch.validation import check_file

CHAT = "/v1/chat/completions"


def resolve(name: str) -> str | None:
    return {"m": "model-m", "m-alias": "model-m", "other": "model-o"}.get(name)


def line(cid, model="m", url=CHAT, method="POST", **body) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return json.dumps({"custom_id": cid, "method": method, "url": url, "body": body})


def check(*lines: str, endpoint: str = CHAT, max_requests: int = 100):
    return check_file(("\n".join(lines) + "\n").encode(), endpoint, resolve, max_requests)


def test_valid_file_gives_lines_and_model():
    c = check(line("a"), line("b"), "", line("c"))
    assert c.errors == []
    assert [(ln.line, ln.custom_id) for ln in c.lines] == [(1, "a"), (2, "b"), (4, "c")]
    assert c.model == "model-m"


@pytest.mark.parametrize("lines, expected", [
    ([line("a"), "{not json"],
     {"code": "invalid_json_line", "line": 2, "param": None,
      "message": "This line is not parseable as valid JSON."}),
    ([line("a"), line("a")],
     {"code": "duplicate_custom_id", "line": 2, "param": "custom_id",
      "message": "The custom_id 'a' for this request is a duplicate of another request. The "
                 "custom_id parameter must be unique for each request in a batch."}),
    ([line("a"), line("b", model="other")],
     {"code": "mismatched_model", "line": 2, "param": "body.model",
      "message": "The model 'other' for this request does not match the rest of the batch. "
                 "Each batch must contain requests for a single model."}),
    ([line("a", model="nope")],
     {"code": "model_not_found", "line": 1, "param": "body.model",
      "message": "The provided model 'nope' is not supported by the Batch API."}),
    ([line("a", url="/v1/completions")],
     {"code": "invalid_url", "line": 1, "param": "url",
      "message": "The URL provided for this request does not match the batch endpoint."}),
    ([line("a", method="GET")],
     {"code": "invalid_value", "line": 1, "param": "method",
      "message": "Invalid value: 'GET'. Supported values are: 'POST'."}),
    ([line("a", stream=True)],
     {"code": "streaming_unsupported", "line": 1, "param": "body.stream",
      "message": "Chat Completions: Streaming is not supported in the Batch API."}),
    ([json.dumps({"method": "POST", "url": CHAT, "body": {"model": "m", "messages": []}})],
     {"code": "missing_required_parameter", "line": 1, "param": "custom_id",
      "message": "Missing required parameter: 'custom_id'."}),
    ([json.dumps({"custom_id": 7, "method": "POST", "url": CHAT,
                  "body": {"model": "m", "messages": []}})],
     {"code": "invalid_type", "line": 1, "param": "custom_id",
      "message": "Invalid type for 'custom_id': expected a string, but got an integer "
                 "instead."}),
    ([json.dumps({"custom_id": "a", "method": "POST", "url": CHAT,
                  "body": {"messages": []}})],
     {"code": "invalid_request", "line": 1, "param": "body.model",
      "message": "Model parameter is required."}),
    ([json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "m"}})],
     {"code": "invalid_request", "line": 1, "param": "body.messages",
      "message": "Messages parameter is required."}),
    (["[1, 2]"],
     {"code": "invalid_request", "line": 1, "param": None,
      "message": "Each line must be a JSON object with custom_id, method, url and body."}),
    ([""], {"code": "empty_file", "line": None, "param": None,
            "message": "The batch input file is empty."}),
])
def test_each_bad_line_gets_openais_error(lines, expected):
    c = check(*lines)
    assert c.errors == [expected]


def test_aliases_of_one_model_are_one_model_only_when_written_alike():
    assert check(line("a", model="m"), line("b", model="m")).errors == []
    # OpenAI's rule is one model name per file; a second spelling is a mismatch.
    assert [e["code"] for e in check(line("a", model="m"), line("b", model="m-alias")).errors] \
        == ["mismatched_model"]


def test_every_error_is_reported_not_only_the_first():
    c = check("nope", line("a"), line("a"), line("b", url="/v1/x"))
    assert [(e["code"], e["line"]) for e in c.errors] == [
        ("invalid_json_line", 1), ("duplicate_custom_id", 3), ("invalid_url", 4)]


def test_too_many_requests():
    c = check(line("a"), line("b"), line("c"), max_requests=2)
    assert [e["code"] for e in c.errors] == ["too_many_requests"]


def test_not_utf8():
    c = check_file(b"\xff\xfe\x00garbage", CHAT, resolve, 10)
    assert c.errors[0]["code"] == "invalid_file"


# ---- store and runner ---------------------------------------------------------


def ok_result(ln: Line, tokens: int = 3):
    return response_result(ln, 200, f"req-{ln.line}", {
        "object": "chat.completion", "custom": ln.custom_id,
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens,
                  "prompt_tokens_details": {"cached_tokens": 2}}})


@pytest.fixture
def parts(tmp_path: Path):
    store = BatchStore(f"sqlite:///{tmp_path / 'batches.db'}")
    files = FileBytes(tmp_path / "files")
    yield store, files, tmp_path
    store.close()


def add_batch(store: BatchStore, files: FileBytes, n: int, expires_in: int = 3600) -> str:
    data = "".join(line(f"c{i}") + "\n" for i in range(n)).encode()
    files.save_lines("file-in", data.decode().splitlines())
    store.add_file(FileRow("file-in", 0.0, len(data), "in.jsonl", "batch", None, "processed"))
    now = st.now_s()
    store.add_batch(BatchRow(id="batch_1", created=1.0, endpoint=CHAT, input_file_id="file-in",
                             completion_window="24h", status=st.VALIDATING, created_at=now,
                             expires_at=now + expires_in))
    return "batch_1"


def test_a_line_is_stored_once_and_counted_once(parts):
    store, files, _ = parts
    bid = add_batch(store, files, 2)
    runner = BatchRunner(store, files, None, resolve, 4)
    runner.validate(store.get_batch(bid))
    ln = store.pending_lines(bid, 0, 10)[0]
    assert store.complete_line(bid, ln.line, ok_result(ln)) is True
    assert store.complete_line(bid, ln.line, ok_result(ln)) is False  # a second run of it
    b = store.get_batch(bid)
    assert (b.status, b.total, b.completed, b.failed) == (st.IN_PROGRESS, 2, 1, 0)
    assert (b.input_tokens, b.cached_tokens, b.output_tokens) == (5, 2, 3)
    assert [x.custom_id for x in store.pending_lines(bid, 0, 10)] == ["c1"]


def run_until(runner: BatchRunner, store: BatchStore, bid: str, done, timeout: float = 10.0):
    async def go() -> None:
        runner.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not done(store.get_batch(bid)):
                assert loop.time() < deadline, store.get_batch(bid)
                await asyncio.sleep(0.02)
        finally:
            await runner.stop()

    asyncio.run(go())


def test_a_runner_stopped_midway_is_resumed_by_the_next_one_exactly_once(parts):
    """The first runner stops with lines in flight (as a killed server would); the next
    runner on the same store runs what is left, and the output has every line once."""
    store, files, _ = parts
    bid = add_batch(store, files, 30)
    calls: list[str] = []

    async def slow(batch_id, url, ln):
        calls.append(ln.custom_id)
        await asyncio.sleep(0.05)
        return ok_result(ln)

    first = BatchRunner(store, files, slow, resolve, 4, poll_s=0.01)
    run_until(first, store, bid, lambda b: b.completed >= 8)
    mid = store.get_batch(bid)
    assert mid.status == st.IN_PROGRESS and 8 <= mid.completed < 30

    second = BatchRunner(store, files, slow, resolve, 4, poll_s=0.01)
    run_until(second, store, bid, lambda b: b.status == st.COMPLETED)
    b = store.get_batch(bid)
    assert (b.total, b.completed, b.failed) == (30, 30, 0)
    out = [json.loads(x) for x in files.read(b.output_file_id).decode().splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"c{i}" for i in range(30))
    assert b.error_file_id is None  # no failures, no error file
    # Lines abandoned in flight ran again, but only one result of each was kept.
    assert len(calls) >= 30
    assert b.completed_at >= b.finalizing_at >= b.in_progress_at


def test_expiry_writes_batch_expired_for_lines_never_run(parts):
    store, files, _ = parts
    bid = add_batch(store, files, 5, expires_in=-1)  # the window is already over
    runner = BatchRunner(store, files, None, resolve, 4)
    runner.validate(store.get_batch(bid))
    first = store.pending_lines(bid, 0, 2)
    for ln in first:
        store.complete_line(bid, ln.line, ok_result(ln))
    runner.finalize(bid, st.EXPIRED)
    b = store.get_batch(bid)
    assert b.status == st.EXPIRED and b.expired_at is not None
    assert (b.total, b.completed, b.failed) == (5, 2, 3)
    out = [json.loads(x) for x in files.read(b.output_file_id).decode().splitlines()]
    err = [json.loads(x) for x in files.read(b.error_file_id).decode().splitlines()]
    assert [o["custom_id"] for o in out] == ["c0", "c1"]
    assert [e["custom_id"] for e in err] == ["c2", "c3", "c4"]
    assert all(e["response"] is None and e["error"] == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired."}
        for e in err)
    # Finishing again (a crash after the files were written) changes nothing.
    runner.finalize(bid, st.EXPIRED)
    assert store.get_batch(bid).output_file_id == b.output_file_id


def test_a_torn_last_line_is_cut_and_not_counted(tmp_path: Path):
    p = tmp_path / "out.jsonl"
    p.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c", "resp')
    assert read_done(p) == {"a", "b"}
    assert p.read_bytes() == b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
