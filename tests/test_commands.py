"""The command layer's own logic: base URLs, the missing-extra hint, engine options, imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from golive import extras
from golive.commands import app
from golive.commands.common import ENGINE, engine_config, extra_hint, needs_extra
from golive.commands.eval import grader_modules
from golive.commands.urls import api_base, error_line, server_base
from golive.engine.engine import EngineConfig


@pytest.mark.parametrize("given", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/",
                                   "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/",
                                   " 127.0.0.1:8000 "])
def test_both_url_forms_mean_the_same_server(given):
    assert server_base(given) == "http://127.0.0.1:8000"
    assert api_base(given) == "http://127.0.0.1:8000/v1"


def test_api_base_keeps_another_providers_path():
    assert api_base("https://example.com/openai/v1/") == "https://example.com/openai/v1"
    assert api_base("https://example.com/api/paas/v4") == "https://example.com/api/paas/v4"
    assert server_base("https://example.com/proxy/v1") == "https://example.com/proxy"


def test_error_line_is_one_line_with_the_message():
    body = '{"error": {"message": "model \\"x\\" not found\\nat all", "type": "invalid"}}'
    assert error_line(404, body) == 'HTTP 404: model "x" not found at all'
    assert error_line(404, '{"detail": "Not Found"}') == "HTTP 404: Not Found"
    assert error_line(502, "<html>\n bad gateway\n</html>") == "HTTP 502: <html> bad gateway </html>"
    assert error_line(500, "") == "HTTP 500"


def test_chat_against_a_dead_url_says_so_in_one_line(unused_port):
    r = CliRunner().invoke(app, ["chat", "--url", f"http://127.0.0.1:{unused_port}", "hi"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "cannot reach http://127.0.0.1:" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_extra_hint_is_one_line():
    assert extras.hint("evals", "golive eval") == \
        "golive eval needs the evals extra: pip install 'golive[evals]'"
    with pytest.raises(extras.MissingExtra) as e:
        extras.require("evals", "json", "no_such_module_golive", what="golive eval")
    assert e.value.modules == ["no_such_module_golive"] and isinstance(e.value, ImportError)
    extras.require("evals", "json", "typer")  # installed: nothing happens
    assert extras.extra_for("torch.nn") in ("evals", "rag", "tune")
    assert extras.extra_for("rouge_score") == "evals" and extras.extra_for("json") is None


def test_commands_turn_a_missing_extra_into_the_hint(capsys):
    with pytest.raises(typer.Exit) as e:
        needs_extra("rag", "no_such_module_golive", what="golive rag")
    assert e.value.exit_code == 2
    assert capsys.readouterr().err == "golive rag needs the rag extra: pip install 'golive[rag]'\n"

    with pytest.raises(typer.Exit):  # found late: the import of one of an extra's modules
        with extra_hint("golive eval"):
            raise ModuleNotFoundError("No module named 'bert_score'", name="bert_score")
    assert capsys.readouterr().err.startswith("golive eval needs the evals extra")

    with pytest.raises(ModuleNotFoundError):  # anything else is a real bug: not hidden
        with extra_hint("golive eval"):
            raise ModuleNotFoundError("No module named 'nope'", name="nope")


def test_eval_run_names_the_extra_its_graders_need(tmp_path, monkeypatch):
    import golive.extras as ex

    (tmp_path / "d.jsonl").write_text('{"input": "a", "expected": "a"}\n')
    spec = ("name: t\ndataset: d.jsonl\ndefaults: {model: m, base_url: 'http://127.0.0.1:9/v1'}"
            "\nvariants: [{name: v}]\ngraders: [{type: %s}]\n")
    (tmp_path / "rouge.yaml").write_text(spec % "rouge")
    (tmp_path / "contains.yaml").write_text(spec % "contains")
    real = ex.missing
    monkeypatch.setattr(ex, "missing", lambda *m: [x for x in m if x == "rouge_score"]
                        or real(*m))
    assert grader_modules(tmp_path / "rouge.yaml") == ("rouge_score", "nltk")
    assert grader_modules(tmp_path / "contains.yaml") == ()
    r = CliRunner().invoke(app, ["eval", "run", str(tmp_path / "rouge.yaml"), "--db",
                                 str(tmp_path / "e.db")])
    assert r.exit_code == 2, r.output
    assert r.output == "golive eval needs the evals extra: pip install 'golive[evals]'\n"
    # an eval whose graders need no extra goes on
    r = CliRunner().invoke(app, ["eval", "validate", str(tmp_path / "contains.yaml")])
    assert r.exit_code == 0 and "ok: t" in r.output, r.output


def test_engine_options_are_engine_config_defaults():
    assert ENGINE == EngineConfig()
    assert engine_config() == EngineConfig()
    cfg = engine_config(slots=3, ctx=1024, threads=2, no_prefix_cache=True, priority_guard=0)
    assert cfg == dataclasses.replace(EngineConfig(), slots=3, kv_size=1024, threads=2,
                                      prefix_cache=False, priority_guard_s=0)


def test_serving_imports_no_heavy_library():
    # `pip install golive` has none of these: serving must not import them
    code = ("import sys, golive.commands, golive.api.app, golive.backends.registry, "
            "golive.backends.embedded, golive.batch.offline, golive.batch.service, "
            "golive.observe.audit, golive.observe.logview, golive.evals.runner\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', "
            "'sentence_transformers', 'bert_score', 'rouge_score', 'nltk', 'scipy', "
            "'datasketch', 'peft', 'trl', 'sklearn', 'pandas'})\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
