"""Eval files and datasets: bad input gets errors naming file, line and field. Plus the
pure logic of compare (paired bootstrap), the request-log sampler and labelling."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golive.commands import app
from golive.evals.dataset import load_examples
from golive.evals.errors import EvalError, EvalFileErrors
from golive.evals.spec import load_spec, resolve_variants
from golive.evals.stats import paired_bootstrap

GOOD = """\
name: t
dataset: data.jsonl
defaults:
  model: m
  parameters: {temperature: 0, max_tokens: 8}
variants:
  - name: a
  - name: b
    prompt: "Q: {{ input }}"
graders:
  - type: contains
"""


def write(tmp_path: Path, text: str, data: str = '{"input": "hi", "expected": "x"}\n') -> Path:
    (tmp_path / "data.jsonl").write_text(data)
    p = tmp_path / "eval.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def errors_of(path: Path) -> list[EvalError]:
    with pytest.raises(EvalError) as exc:
        load_spec(path)
    return exc.value.errors if isinstance(exc.value, EvalFileErrors) else [exc.value]


def test_good_file_resolves_defaults(tmp_path):
    p = write(tmp_path, GOOD)
    spec = load_spec(p)
    a, b = resolve_variants(spec, tmp_path, base_url="http://h:1/v1/")
    assert a.prompt == "{{ input }}" and b.prompt == "Q: {{ input }}"
    assert a.model == b.model == "m" and a.base_url == "http://h:1/v1"
    assert b.parameters.request_kwargs() == {"temperature": 0, "max_tokens": 8}


@pytest.mark.parametrize("snippet, field, line, words", [
    # unknown grader type: points at the `type:` line
    ("graders:\n  - type: contains\n  - type: rogue\n", "graders[1].type", 12, "unknown grader"),
    # a typo'd field: named, with a suggestion
    ("graders:\n  - type: rouge\n    varient: rougeL\n", "graders[0].varient", 12, "variant"),
    # a bad value deep inside
    ("graders:\n  - type: rouge\n    variant: rouge3\n", "graders[0].variant", 12, "rouge1"),
    ("graders:\n  - type: regex\n    pattern: '([a-z'\n", "graders[0].pattern", 12,
     "regular expression"),
    ("graders:\n  - type: pairwise\n    against: nobody\n", "graders[0].against", 12,
     "no variant named 'nobody'"),
])
def test_bad_grader_entries(tmp_path, snippet, field, line, words):
    text = GOOD.split("graders:")[0] + snippet
    errs = errors_of(write(tmp_path, text))
    assert any(e.field == field and e.where.endswith(f":{line}") and words in e.message
               for e in errs), [str(e) for e in errs]


def test_bad_values_name_field_and_line(tmp_path):
    text = GOOD.replace("temperature: 0", "temperature: 5").replace(
        "  - name: b\n", "  - name: b\n    tier: fast\n    rag: true\n")
    errs = {e.field: e for e in errors_of(write(tmp_path, text))}
    assert errs["defaults.parameters.temperature"].where.endswith("eval.yaml:5")
    assert "less than or equal to 2" in errs["defaults.parameters.temperature"].message
    assert errs["variants[1].tier"].where.endswith(":9")
    assert "'priority'" in errs["variants[1].tier"].message
    assert errs["variants[1].rag"].where.endswith(":10")
    assert "RAG" in errs["variants[1].rag"].message


def test_missing_fields_and_bad_template(tmp_path):
    text = GOOD.replace("name: t\n", "").replace('"Q: {{ input }}"', '"Q: {{ input }"')
    errs = {e.field: e for e in errors_of(write(tmp_path, text))}
    assert errs["name"].message.startswith("required field is missing")
    assert errs["variants[1].prompt"].where.endswith(":8")
    assert "jinja2" in errs["variants[1].prompt"].message


def test_duplicate_variant_names(tmp_path):
    errs = errors_of(write(tmp_path, GOOD.replace("name: b", "name: a")))
    assert errs[0].field == "variants[1].name" and "duplicate" in errs[0].message
    assert errs[0].where.endswith(":8")


def test_yaml_syntax_error_has_line(tmp_path):
    errs = errors_of(write(tmp_path, GOOD.replace("  - name: a\n", "  - name: [a\n")))
    assert "not valid YAML" in errs[0].message and errs[0].where.endswith(":8")
    errs = errors_of(write(tmp_path, "- just\n- a list\n"))
    assert "must be a YAML mapping" in errs[0].message


def test_cli_validate_reports_all_problems(tmp_path):
    bad = GOOD.replace("temperature: 0", "temperature: -1").replace("type: contains",
                                                                    "type: contains\n    wieght: 2")
    p = write(tmp_path, bad)
    r = CliRunner().invoke(app, ["eval", "validate", str(p)])
    assert r.exit_code == 2
    assert "eval.yaml:5: defaults.parameters.temperature" in r.output
    assert "eval.yaml:12: graders[0].wieght: unknown field; did you mean 'weight'?" in r.output
    ok = CliRunner().invoke(app, ["eval", "validate", str(write(tmp_path, GOOD))])
    assert ok.exit_code == 0 and "1 cases, 2 variants, 1 graders" in ok.output


# ---- datasets ------------------------------------------------------------------------------


def test_jsonl_shapes(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"input": "a", "expected": "A"}\n\n'
                 '{"id": "q2", "inputs": {"question": "b"}, "expected": ["B", "bee"], '
                 '"metadata": {"k": 1}}\n'
                 '{"question": "c", "context": "ctx"}\n')
    a, b, c = load_examples(p)
    assert (a.id, a.inputs, a.expected) == ("1", {"input": "a"}, "A")
    assert (b.id, b.inputs, b.expected, b.metadata) == ("q2", {"question": "b"}, ["B", "bee"],
                                                        {"k": 1})
    assert c.inputs == {"question": "c", "context": "ctx"} and c.expected is None


@pytest.mark.parametrize("content, line, field, words", [
    ('{"input": "a"}\n{"input": "b",}\n', 2, None, "not valid JSON"),
    ('{"input": "a"}\n["x"]\n', 2, None, "JSON object"),
    ('{"input": "a", "metadata": 3}\n', 1, "metadata", "must be an object"),
    ('{"expected": "a"}\n', 1, "input", "no inputs"),
    ('{"id": "x", "input": "a"}\n{"id": "x", "input": "b"}\n', 2, "id", "duplicate id 'x'"),
])
def test_bad_jsonl_lines(tmp_path, content, line, field, words):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(EvalError) as exc:
        load_examples(p)
    e = exc.value
    assert e.where == f"{p}:{line}" and e.field == field and words in e.message


def test_csv_dataset_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('id,question,expected,metadata.topic,metadata\n'
                 'q1,"Capital of France, please?",Paris,geo,"{""level"": 1}"\n')
    (ex,) = load_examples(p)
    assert ex.id == "q1" and ex.inputs == {"question": "Capital of France, please?"}
    assert ex.expected == "Paris" and ex.metadata == {"topic": "geo", "level": 1}
    p.write_text("question,expected\nq,a\nq2,a,extra\n")
    with pytest.raises(EvalError, match="3 fields, but the header has 2") as exc:
        load_examples(p)
    assert exc.value.where == f"{p}:3"
    p.write_text("question,expected\nq\n")
    with pytest.raises(EvalError, match="no value for expected"):
        load_examples(p)
    p.write_text("question,metadata\nq,{oops\n")
    with pytest.raises(EvalError, match="JSON object") as exc:
        load_examples(p)
    assert exc.value.field == "metadata" and exc.value.where == f"{p}:2"


def test_undefined_template_variable_names_variant_and_case(tmp_path):
    from golive.evals.runner import Evaluation, RunOptions

    p = write(tmp_path, GOOD.replace('"Q: {{ input }}"', '"Q: {{ question }}"'))
    with pytest.raises(EvalError) as exc:
        Evaluation(p, RunOptions())
    assert exc.value.field == "variants[b].prompt" and "'question' is undefined" in str(exc.value)
    assert exc.value.where == "case 1"


# ---- compare: paired bootstrap --------------------------------------------------------------


def test_paired_bootstrap():
    a = [0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5] * 3
    same = paired_bootstrap(a, a)
    assert same.diff == 0 and same.p_value == 1.0 and same.verdict == "no significant difference"
    better = paired_bootstrap(a, [min(1.0, x + 0.5) for x in a])
    assert better.diff == pytest.approx(0.3) and better.ci_low > 0 and better.verdict == "better"
    assert better.p_value < 0.01
    worse = paired_bootstrap([min(1.0, x + 0.5) for x in a], a)
    assert worse.verdict == "worse" and worse.ci_high < 0
    # Pairing matters: a small consistent gain on cases of very different difficulty
    # is significant paired, even though the two means are close.
    base = [i / 30 for i in range(30)]
    gain = paired_bootstrap(base, [x + 0.02 for x in base])
    assert gain.verdict == "better"
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 0.0])
    # Deterministic for a seed.
    assert paired_bootstrap(a, a[::-1], seed=3) == paired_bootstrap(a, a[::-1], seed=3)


def test_compare_fail_on_regression_gates_ci(tmp_path):
    # pure logic: two stored runs whose case scores are made up, so the verdict is known
    from golive.evals.store import EvalStore

    db = tmp_path / "evals.db"
    scores = [0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0] * 3
    with EvalStore(db) as store:
        ids = {}
        for name, shift in (("before", 0.5), ("after", 0.0)):
            run = store.new_run(name, "qa.yaml", {})
            for i, sc in enumerate(scores):
                store.save_result(run, {"variant": "v", "case_id": f"c{i}", "repeat": 0,
                                        "score": min(1.0, sc + shift)})
            store.finish_run(run, {})
            ids[name] = run
    cli = CliRunner()
    worse = cli.invoke(app, ["eval", "compare", ids["before"], ids["after"], "--db", str(db),
                             "--fail-on-regression", "--json"])
    assert worse.exit_code == 1, worse.output
    assert json.loads(worse.output)["comparisons"][0]["verdict"] == "worse"
    better = cli.invoke(app, ["eval", "compare", ids["after"], ids["before"], "--db", str(db),
                              "--fail-on-regression"])
    assert better.exit_code == 0, better.output
    same = cli.invoke(app, ["eval", "compare", ids["after"], ids["after"], "--db", str(db),
                            "--fail-on-regression"])
    assert same.exit_code == 0, same.output


# ---- eval sets from the request log ---------------------------------------------------------


def test_sample_from_log_then_label(tmp_path):
    from golive.evals.dataset import write_jsonl
    from golive.evals.fromlog import label_examples, sample_from_log
    from golive.observe.record import RequestRecord
    from golive.observe.requestlog import RequestLog

    url = f"sqlite:///{tmp_path / 'requests.db'}"
    with RequestLog(url) as log:
        for i in range(6):
            log.write(RequestRecord(
                id=f"r{i}", created=1000.0 + i, endpoint="/v1/chat/completions", model="m",
                tier_requested="auto", tier_served="default",
                request_body=json.dumps({"model": "m", "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": f"question {i}"}]}]}),
                response_body=json.dumps({"choices": [{"index": 0, "content": f"answer {i}",
                                                       "finish_reason": "stop"}]})))
        log.write(RequestRecord(id="nobody", created=1.0, endpoint="/v1/chat/completions",
                                model="m", tier_requested="auto", tier_served="default"))
        log.write(RequestRecord(id="failed", created=2.0, endpoint="/v1/chat/completions",
                                model="m", tier_requested="auto", tier_served="default",
                                status=400, request_body="{}", response_body="{}"))
    sample, usable = sample_from_log(4, seed=1, db=url)
    assert usable == 6 and len(sample) == 4
    assert sample == sample_from_log(4, seed=1, db=url)[0]  # reproducible
    ex = sample[0]
    n = ex.id[1:]
    assert ex.inputs["input"] == f"question {n}" and ex.inputs["system"] == "Be brief."
    assert ex.expected == f"answer {n}" and ex.metadata["label"] == "unreviewed"

    path = tmp_path / "set.jsonl"
    write_jsonl(path, sample)
    answers = iter([("accept", None), ("edit", "better answer"), ("reject", None),
                    ("quit", None)])
    saved = []

    def save(kept):
        write_jsonl(path, kept)
        saved.append(len(kept))

    counts = label_examples(load_examples(path), lambda e, i, n: next(answers), save)
    assert counts == {"accepted": 1, "edited": 1, "rejected": 1, "skipped": 0}
    assert saved == [4, 4, 3]
    after = load_examples(path)
    assert [e.metadata["label"] for e in after] == ["accepted", "edited", "unreviewed"]
    assert after[1].expected == "better answer"


def test_label_cli(tmp_path):
    from golive.evals.dataset import Example, write_jsonl

    path = tmp_path / "set.jsonl"
    write_jsonl(path, [Example(id=f"x{i}", inputs={"input": f"q{i}"}, expected=f"a{i}",
                               metadata={"label": "unreviewed"}) for i in range(2)])
    r = CliRunner().invoke(app, ["eval", "label", str(path)], input="e\nfixed\nr\n")
    assert r.exit_code == 0, r.output
    (only,) = load_examples(path)
    assert only.expected == "fixed" and only.metadata["label"] == "edited"


def test_unreachable_backend_fails_fast(tmp_path):
    from conftest import free_port

    p = write(tmp_path, GOOD)
    r = CliRunner().invoke(app, ["eval", str(p), "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                                 "--db", str(tmp_path / "e.db"), "--no-progress"])
    assert r.exit_code == 2 and "cannot reach the backend" in r.output
    listed = CliRunner().invoke(app, ["eval", "list", "--db", str(tmp_path / "e.db"), "--json"])
    assert json.loads(listed.output) == []  # no half-made run was stored
