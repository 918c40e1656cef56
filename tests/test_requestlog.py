"""Request log on a real SQLite file, and the `golive log` commands."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from golive.commands.log import log_app
from golive.observe.logview import parse_time
from golive.observe.record import RequestRecord
from golive.observe.requestlog import DATA_DIR_ENV, LOG_URL_ENV, RequestLog, percentile

DAY1 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC).timestamp()
DAY2 = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp()
WIDE = {"COLUMNS": "250"}  # rich would squeeze tables to 80 columns and elide values


def rec(id: str, created: float, tier: str = "default", **kw: object) -> RequestRecord:
    base: dict[str, object] = dict(
        id=id, created=created, endpoint="/v1/chat/completions", model="smollm2-135m-instruct",
        tier_requested=tier, tier_served=tier,
    )
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def known_records() -> list[RequestRecord]:
    """8 requests whose summary is worked out by hand in test_summary_known_numbers."""
    out = [
        rec(f"d{i}", DAY1 + i, total_s=t, ttft_s=f, prompt_tokens=100,
            cached_tokens=50 if i < 2 else 0, completion_tokens=10, cost_usd=0.001,
            client_id="alice")
        for i, (t, f) in enumerate(zip([0.4, 0.1, 1.0, 0.3, 0.2],
                                       [0.04, 0.01, 0.05, 0.03, 0.02], strict=True))
    ]
    out += [
        rec("p0", DAY2, "priority", total_s=0.5, ttft_s=0.05, prompt_tokens=100,
            cached_tokens=100, completion_tokens=20, cost_usd=0.002, client_id="bob"),
        rec("p1", DAY2 + 1, "priority", total_s=0.7, ttft_s=None, prompt_tokens=100,
            cached_tokens=100, completion_tokens=20, cost_usd=0.002, client_id="bob"),
        rec("f0", DAY2 + 2, "flex", status=429, total_s=0.001, error="resource_unavailable",
            model="other-model"),
    ]
    return out


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'requests.db'}"


@pytest.fixture
def filled(url: str) -> str:
    with RequestLog(url) as rlog:
        for r in known_records():
            rlog.write(r)
    return url


def test_roundtrip_every_field(url: str) -> None:
    r = rec("x1", DAY1, "priority", tier_requested="auto", status=200, queued_s=0.25,
            ttft_s=None, total_s=1.5, prompt_tokens=10, cached_tokens=4, completion_tokens=7,
            accepted_prediction_tokens=3, rejected_prediction_tokens=2, cost_usd=1.25e-5,
            finish_reason="stop", error=None, client_id="k", stream=True,
            request_body='{"a": 1}', response_body="{}",
            extra={"preempted": 2, "path": [1, 2], "obj": Path("/x")})
    with RequestLog(url) as rlog:
        rlog.write(r)
        [got] = rlog.query()
    # non-JSON extra values are stored as their str() rather than losing the row
    assert got.extra == {"preempted": 2, "path": [1, 2], "obj": "/x"}
    got.extra = r.extra
    assert got == r


def test_sqlite_uses_wal_and_indexes(url: str) -> None:
    with RequestLog(url) as rlog, rlog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        indexed = {tuple(ix["column_names"]) for ix in sa.inspect(conn).get_indexes("requests")}
    assert {("created",), ("tier_served",)} <= indexed


def test_default_url_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "nested" / "golive"
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    monkeypatch.delenv(LOG_URL_ENV, raising=False)
    with RequestLog() as rlog:
        rlog.write(rec("a", DAY1))
        assert rlog.url == f"sqlite:///{data / 'requests.db'}"
    assert (data / "requests.db").is_file()


def test_query_filters_and_order(filled: str) -> None:
    with RequestLog(filled) as rlog:
        assert [r.id for r in rlog.query(limit=3)] == ["f0", "p1", "p0"]  # newest first
        assert len(rlog.query(limit=None)) == 8
        assert {r.id for r in rlog.query(tier="priority")} == {"p0", "p1"}
        assert [r.id for r in rlog.query(model="other-model")] == ["f0"]
        assert [r.id for r in rlog.query(status=429)] == ["f0"]
        assert len(rlog.query(client_id="alice")) == 5
        assert rlog.query(endpoint="/v1/completions") == []
        # since inclusive, until exclusive
        assert [r.id for r in rlog.query(since=DAY1 + 3, until=DAY2)] == ["d4", "d3"]


def test_percentile_matches_hand_computed() -> None:
    xs = [0.4, 0.1, 1.0, 0.3, 0.2]
    assert percentile(xs, 0.5) == pytest.approx(0.3)
    # position 4 * 0.95 = 3.8 -> 0.4 + 0.8 * (1.0 - 0.4)
    assert percentile(xs, 0.95) == pytest.approx(0.88)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_summary_known_numbers(filled: str) -> None:
    with RequestLog(filled) as rlog:
        s = rlog.summary()
        only_priority = rlog.summary(tier="priority")
    assert s["count"] == 8
    assert s["errors"] == 1
    assert s["tokens"] == {"prompt_tokens": 700, "cached_tokens": 300, "completion_tokens": 90,
                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    assert s["cache_hit_rate"] == pytest.approx(300 / 700)  # 2 x 50 + 2 x 100 cached
    assert s["cost_usd"] == pytest.approx(0.009)
    assert s["cost_per_day"] == pytest.approx({"2026-01-01": 0.005, "2026-01-02": 0.004})
    d = s["latency"]["default"]
    assert (d["count"], d["ok"]) == (5, 5)
    assert d["total_p50"] == pytest.approx(0.3)
    assert d["total_p95"] == pytest.approx(0.88)
    assert d["ttft_p50"] == pytest.approx(0.03)
    assert d["ttft_p95"] == pytest.approx(0.048)  # 0.04 + 0.8 * 0.01
    p = s["latency"]["priority"]
    assert p["total_p50"] == pytest.approx(0.6)
    assert p["total_p95"] == pytest.approx(0.69)  # 0.5 + 0.95 * 0.2
    assert p["ttft_p50"] == p["ttft_p95"] == pytest.approx(0.05)  # p1 has no ttft
    # the refused flex request counts, but not in latency
    assert s["latency"]["flex"] == {"count": 1, "ok": 0, "total_p50": None, "total_p95": None,
                                    "ttft_p50": None, "ttft_p95": None}
    assert only_priority["count"] == 2
    assert only_priority["cost_per_day"] == pytest.approx({"2026-01-02": 0.004})
    assert only_priority["cache_hit_rate"] == pytest.approx(1.0)


def test_empty_summary(url: str) -> None:
    with RequestLog(url) as rlog:
        s = rlog.summary()
    assert s["count"] == 0 and s["cache_hit_rate"] is None and s["latency"] == {}


def test_async_writer_flush_and_close(url: str) -> None:
    rlog = RequestLog(url)
    for i in range(600):  # more than one background batch
        rlog.write_async(rec(f"a{i}", DAY1 + i, cost_usd=0.5))
    rlog.flush()
    assert len(rlog.query(limit=None)) == 600
    # a duplicate id fails alone; the rest of its batch is stored
    rlog.write_async(rec("a0", DAY1))
    rlog.write_async(rec("new", DAY2))
    rlog.close()
    assert rlog.failed_writes == 1
    with RequestLog(url) as again:
        assert again.summary()["count"] == 601
        assert again.summary()["cost_usd"] == pytest.approx(300.0)


def test_parse_time() -> None:
    assert parse_time("1h", now=10_000.0) == 6_400.0
    assert parse_time("2d", now=200_000.0) == 200_000.0 - 2 * 86400
    assert parse_time("30m", now=2_000.0) == 200.0
    assert parse_time("2026-01-02") == dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp()
    assert parse_time("2026-01-02T12:00:00+02:00") == DAY2 - 7200
    assert parse_time(None) is None
    with pytest.raises(ValueError, match="yesterday"):
        parse_time("yesterday")


runner = CliRunner()


def test_cli_list(filled: str) -> None:
    result = runner.invoke(log_app, ["--db", filled, "--limit", "3"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "other-model" in result.output and "429" in result.output
    assert "2026-01-02 12:00:01" in result.output  # p1, UTC
    assert "700.0" in result.output  # p1 total ms
    assert "alice" not in result.output  # the day-1 rows are past the limit

    result = runner.invoke(log_app, ["--db", filled, "--tier", "default", "--json",
                                     "--since", "2026-01-01T12:00:03"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == ["d4", "d3"]
    assert rows[0]["total_s"] == 0.2 and rows[0]["client_id"] == "alice"


def test_cli_list_narrow_terminal_keeps_numbers(filled: str) -> None:
    with RequestLog(filled) as rlog:
        rlog.write(rec("auto1", DAY2 + 9, "priority", tier_requested="auto", total_s=12.25,
                       ttft_s=1.5, prompt_tokens=12345, cached_tokens=10240,
                       completion_tokens=568, cost_usd=0.000123))
    result = runner.invoke(log_app, ["--db", filled, "--limit", "2"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    # free text (model, tier) may fold onto more lines; numbers must stay whole
    for expected in ("01-02 12:00:09", "1500.0", "12250.0", "12345/10240/568", "0.000123",
                     "01-02 12:00:02", "429"):
        assert expected in result.output, expected
    # one line per request: long text ends in an ellipsis instead of folding
    assert len(result.output.splitlines()) == 2 + 4  # title, header, rule, caption
    assert "other" in result.output and "…" in result.output


def test_cli_list_one_model_moves_to_the_title(filled: str) -> None:
    result = runner.invoke(log_app, ["--db", filled, "--model", "smollm2-135m-instruct"],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "model smollm2-135m-instruct" in lines[0] and "model" not in lines[1]
    assert len(lines) == 7 + 4 and "0.002000" in result.output


def test_cli_list_empty_and_bad_since(url: str) -> None:
    result = runner.invoke(log_app, ["--db", url], env=WIDE)
    assert result.exit_code == 0 and "no requests logged" in result.output
    result = runner.invoke(log_app, ["--db", url, "--since", "yesterday"], env=WIDE)
    assert result.exit_code == 2
    assert "yesterday" in result.output and "--since" in result.output


def test_cli_summary(filled: str) -> None:
    result = runner.invoke(log_app, ["summary", "--db", filled], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("300.0", "880.0", "30.0", "48.0",  # default: total and ttft p50/p95 ms
                     "600.0", "690.0",                  # priority total p50/p95 ms
                     "42.9%",                           # 300 cached / 700 prompt
                     "2026-01-01", "0.005000", "2026-01-02", "0.004000"):
        assert expected in out, expected

    result = runner.invoke(log_app, ["summary", "--db", filled, "--json"])
    assert json.loads(result.output)["errors"] == 1


def test_cli_group_options_reach_summary_when_mounted(filled: str) -> None:
    # golive.commands mounts log_app as `golive log`; options before `summary` must apply
    app = typer.Typer()
    app.add_typer(log_app, name="log")

    @app.command()
    def version() -> None:
        typer.echo("0")

    result = runner.invoke(app, ["log", "--db", filled, "--tier", "priority", "summary",
                                 "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    assert s["count"] == 2 and list(s["latency"]) == ["priority"]
    result = runner.invoke(app, ["log", "--db", filled, "--limit", "1"], env=WIDE)
    assert result.exit_code == 0 and "other-model" in result.output
