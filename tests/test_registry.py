"""One server, many models: the registry config (pure logic) and a real two-model server."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL, Server
from golive.backends.config import ConfigError, parse_config
from golive.engine.cores import CoreShare
from golive.engine.engine import EngineConfig

# ---- the config file (pure) ------------------------------------------------------


def test_config_entries_in_order_with_engine_overrides():
    entries = parse_config({"models": {
        "a": {"aliases": ["default"], "engine": {"slots": 4, "priority_guard_s": 5}},
        "b": {"weights": "original", "prices": {"input": 1, "output": 2}},
    }})
    assert [e.id for e in entries] == ["a", "b"]
    a, b = entries
    assert a.aliases == ("default",) and a.path is None and a.weights == "auto"
    cfg = a.engine_config(EngineConfig(slots=16, kv_size=4096))
    assert (cfg.slots, cfg.kv_size, cfg.priority_guard_s) == (4, 4096, 5.0)
    assert b.weights == "original" and b.prices == {"input": 1.0, "output": 2.0}


@pytest.mark.parametrize("raw,needle", [
    ({}, "no models"),
    ({"model": {}}, "unknown top-level key"),
    ({"models": {"a": {"kind": "gguf"}}}, "models.a.kind"),
    ({"models": {"a": {"kind": "upstream"}}}, "not served by this version yet"),
    ({"models": {"a": {"weights": "q2"}}}, "models.a.weights"),
    ({"models": {"a": {"path": "/no/such.gguf"}}}, "models.a.path: no such file"),
    ({"models": {"a": {"engine": {"slotz": 2}}}}, "models.a.engine.slotz: unknown engine option"),
    ({"models": {"a": {"engine": {"slots": "4"}}}}, "models.a.engine.slots: expected int"),
    ({"models": {"a": {"engine": {"slots": 0}}}}, "models.a.engine.slots"),
    ({"models": {"a": {"engine": {"prefix_cache": 1}}}}, "expected bool"),
    ({"models": {"a": {"prices": {"input": 1}}}}, "models.a.prices: needs input and output"),
    ({"models": {"a": {"prices": {"input": -1, "output": 1}}}}, "models.a.prices.input"),
    ({"models": {"a": {"aliases": ["x"]}, "b": {"aliases": ["x"]}}}, "'x' is already used"),
    ({"models": {"a": {}, "b": {"aliases": ["a"]}}}, "'a' is already used"),
    ({"models": {"a": {"colour": "red"}}}, "models.a: unknown key"),
])
def test_bad_config_names_file_and_key(raw, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "golive.toml")
    assert needle in str(e.value) and str(e.value).startswith("golive.toml")


def test_cores_go_to_whoever_has_work():
    share = CoreShare(cores=2, watch_load=False)
    assert share.threads(1, busy=True) == 2  # alone with work: all cores
    assert share.threads(2, busy=True) == 1  # both decoding: one each
    assert share.threads(1, busy=True) == 1
    assert share.threads(2, busy=False) == 2  # the other went idle
    assert share.threads(1, busy=True) == 2
    many = CoreShare(cores=2, watch_load=False)
    assert [many.threads(i, busy=True) for i in range(3)] == [2, 1, 1]  # never below one


# ---- a real server with two models from one config ------------------------------------

CONFIG = f"""
[models.{MODEL}]
aliases = ["default"]

[models.smollm2-original]
weights = "original"
prices = {{ input = 100.0, output = 200.0 }}

[models.smollm2-original.engine]
slots = 2
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("golive-registry")
    (d / "golive.toml").write_text(CONFIG)
    s = Server(d, "--config", str(d / "golive.toml"), "--slots", "4", "--ctx", "4096")
    yield s
    s.stop()


def test_both_models_answer_through_the_openai_client(two_models):
    client = two_models.client()
    answers = {}
    for model in (MODEL, "smollm2-original", "default"):
        r = client.chat.completions.create(
            model=model, max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "Name a colour."}])
        assert r.choices[0].message.content
        answers[model] = r
    assert answers["default"].model == MODEL  # an alias answers as its model
    assert answers["smollm2-original"].model == "smollm2-original"
    # the config's prices apply to its own model only
    raw = httpx.post(two_models.base + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2-original", "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}]})
    u = raw.json()["usage"]
    cached = u["prompt_tokens_details"]["cached_tokens"]
    want = ((u["prompt_tokens"] - cached) * 100.0 + cached * 10.0
            + u["completion_tokens"] * 200.0) / 1e6
    assert float(raw.headers["x-golive-cost-usd"]) == pytest.approx(want, rel=1e-6)
    other = httpx.post(two_models.base + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert float(other.headers["x-golive-cost-usd"]) < want / 100


def test_unknown_model_is_404_in_openai_shape(two_models):
    client = two_models.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}])
    err = e.value.body
    assert e.value.status_code == 404
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "gpt-9" in err["message"] and MODEL in err["message"]
    r = httpx.post(two_models.base + "/v1/completions", timeout=30,
                   json={"model": "gpt-9", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_models_list_kinds_capabilities_and_health_per_model(two_models):
    client = two_models.client()
    models = {m.id: m for m in client.models.list().data}
    assert list(models) == [MODEL, "smollm2-original"]
    for m in models.values():
        assert m.model_extra["kind"] == "embedded"
        assert {"chat", "completions", "grammar", "prediction"} <= set(m.model_extra["capabilities"])
    assert "default" in models[MODEL].model_extra["aliases"]
    assert client.models.retrieve("default").id == MODEL
    h = two_models.health()
    assert h["model"] == MODEL
    per = h["models"]
    assert per[MODEL]["weights"] == "Q4_1 -> Q8_0" and per["smollm2-original"]["weights"] == "original"
    assert per[MODEL]["slots"] == 4 and per["smollm2-original"]["slots"] == 2
    # two embedded models share the cores step by step (engine/cores.py)
    assert all(per[m]["threads"].endswith("shared") for m in per)


def test_metrics_and_dashboard_per_model(two_models):
    client = two_models.client()
    client.chat.completions.create(model="smollm2-original", max_tokens=4,
                                   messages=[{"role": "user", "content": "one"}])
    text = httpx.get(two_models.base + "/metrics", timeout=10).text
    steps = {}
    requests: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "golive_engine_steps_total":
                steps[s.labels["model"]] = s.value
            if s.name == "golive_requests_total":
                requests[s.labels["model"]] = requests.get(s.labels["model"], 0) + s.value
    assert set(steps) == {MODEL, "smollm2-original"} and steps["smollm2-original"] > 0
    assert requests["smollm2-original"] >= 1
    d = httpx.get(two_models.base + "/dashboard/data",
                  params={"model": "smollm2-original", "window": 3600}, timeout=10).json()
    assert d["model"] == "smollm2-original" and d["models"] == [MODEL, "smollm2-original"]
    assert d["engine"]["slots"] == 2
    assert d["total"]["requests"] == requests["smollm2-original"]
    r = httpx.get(two_models.base + "/dashboard/data", params={"model": "gpt-9"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_bad_config_fails_serve_with_the_key(tmp_path):
    (tmp_path / "bad.toml").write_text("[models.a]\nweights = 'q2'\n")
    with pytest.raises(RuntimeError, match=r"models\.a\.weights"):
        Server(tmp_path, "--config", str(tmp_path / "bad.toml"))


def test_a_busy_co_tenant_core_is_left_to_it():
    import subprocess
    import sys
    import time

    from golive.engine.cores import CoTenants

    watch = CoTenants(cores=2)
    watch.sample()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 5\n"
                             "while time.monotonic() < end: pass\n"])
    try:
        time.sleep(1.5)
        assert watch.available() == 1  # another process holds a core
    finally:
        spin.kill()
        spin.wait()


def test_co_tenant_arithmetic(monkeypatch):
    from golive.engine import cores

    clock = {"t": 0.0, "own": 0.0, "busy": 0.0, "total": 0.0}
    monkeypatch.setattr(cores.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(cores.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(cores, "_proc_stat", lambda: (clock["busy"], clock["total"]))
    watch = cores.CoTenants(cores=2)
    watch.sample()

    def second(machine_cores: float, own_cores: float) -> int:
        clock["t"] += 1.0
        clock["own"] += own_cores
        clock["total"] += 200.0  # 2 cores x 100 jiffies
        clock["busy"] += machine_cores * 100.0
        return watch.available()

    assert second(2.0, 2.0) == 2  # all the load is ours
    assert second(2.0, 1.0) == 1  # another process holds a core
    assert second(0.3, 0.0) == 2  # a little background noise does not count
