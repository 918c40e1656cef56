"""One real golive server per test session (more only where a test needs other flags)."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from golive.localserver import LocalServer, free_port

__all__ = ["free_port"]  # tests import it from here

MODEL = "smollm2-135m-instruct"


class Server(LocalServer):
    """A `golive serve` subprocess on 127.0.0.1 with its own data dir, started at once."""

    def __init__(self, data_dir: Path, *args: str):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(args, env={"GOLIVE_DATA_DIR": str(data_dir)},
                         log_path=data_dir / "server.log", ready_timeout=120, grace=20)
        self.start()

    @property
    def base(self) -> str:
        return self.url

    def client(self, **kw) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key="test-key", max_retries=0, **kw)

    def aclient(self, **kw) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base_url, api_key="test-key", max_retries=0, **kw)

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["running"] == 0 and h["waiting"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"server still busy: {self.health()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    s = Server(tmp_path_factory.mktemp("golive-main"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server) -> OpenAI:
    return server.client()


# llama.cpp's multi-threaded CPU flash attention splits the KV range between
# threads once the cache has grown, so the same request's logits move by up to
# a few tenths as the server's KV fills (measured: 0.0 with one thread, up to
# ~0.3 with two). Tests that compare two runs token for token (prefix cache on
# and off, with and without a prediction, preempted or not) use one-thread
# servers, so that what they see is golive's logic, not that effect. They also
# run --deterministic: below 64 tokens per decode llama.cpp's CPU matmuls take
# another kernel path than from 64 on, and the two round differently (logits
# apart by up to ~0.7), so that mode computes every prompt position in a large
# batch whether or not the prefix cache held it.
EXACT = ("--threads", "1", "--deterministic")


@pytest.fixture(scope="session")
def exact(tmp_path_factory) -> Server:
    s = Server(tmp_path_factory.mktemp("golive-exact"), *EXACT)
    yield s
    s.stop()


def greedy_tokens(lp_content) -> list[str]:
    return [t.token for t in lp_content]


def assert_same_or_near_tie(ref, other, gap: float = 0.1) -> bool:
    """Greedy outputs must agree, except where the reference's best two tokens were
    within `gap` logits: llama.cpp's CPU kernels give slightly different logits for
    different batch shapes. Returns True when the outputs agree exactly.

    `ref` and `other` are logprobs.content lists; `ref` needs top_logprobs >= 2.
    """
    for i, (a, b) in enumerate(zip(ref, other)):
        if a.token != b.token:
            top = a.top_logprobs
            assert len(top) >= 2, "reference run needs top_logprobs >= 2"
            d = top[0].logprob - top[1].logprob
            assert d <= gap, (
                f"outputs part at token {i} ({a.token!r} vs {b.token!r}) "
                f"where the reference's top-2 gap was {d:.3f} > {gap}")
            return False
    return True


def chromium() -> str:
    """Path of Debian's chromium for the headless page tests.

    `.ci/run` installs it and sets GOLIVE_REQUIRE_BROWSER=1, so there a missing
    browser fails the run; on a developer machine without it the page tests skip
    with the install hint (Playwright cannot download a browser offline).
    """
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "headless page tests need Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("GOLIVE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


# ---- markers: logic / model / server, plus browser and slow ----------------------------
#
# Every test gets exactly one of
#   logic   pure logic: no server, no model file loaded (`pytest -m logic`: seconds);
#   model   loads a model in-process (the GGUF: tokenizer, grammar compiler, runner; or the
#           semantic graders' MiniLM), no server;
#   server  drives a real golive server or the engine on the real model;
# and `browser` when it drives headless Chromium, `slow` when marked so by hand.
# A test or module may carry its kind explicitly (`pytestmark = pytest.mark.server`);
# otherwise it is inferred here from what the test and its fixtures do: the
# conftest server fixtures or `Server(` make it `server`, loading the model makes
# it `model`. The inference is checked as the test runs: a `logic` test that
# loads a GGUF or starts a server, or a `model` test that starts a server,
# fails and says which mark it needs.

KINDS = ("logic", "model", "server")
SERVER_FIXTURES = {"server", "client", "exact"}
_STARTS_SERVER = re.compile(r"\bServer\(|\brunning_server\(")
_LOADS_MODEL = re.compile(
    r"\b(?:Model|Engine|EmbeddedBackend|Runner|Decoder|ModelTokenizer)\(|\bmodel_tokenizer\("
    r"|\b(?:resolve|file_type|resolve_weights)\(")
_BUILTIN_FIXTURES = {"request", "tmp_path", "tmp_path_factory", "monkeypatch", "capsys",
                     "capfd", "caplog", "tmpdir", "recwarn"}


def _source(func) -> str:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return ""


def _inferred_kind(item: pytest.Item) -> str:
    sources = [_source(getattr(item, "function", None))]
    infos = getattr(item, "_fixtureinfo", None)
    kinds = set()
    for name in item.fixturenames:
        if name in SERVER_FIXTURES:
            kinds.add("server")
        if name in _BUILTIN_FIXTURES or infos is None:
            continue
        sources += [_source(d.func) for d in infos.name2fixturedefs.get(name, ())]
    for src in sources:
        if _STARTS_SERVER.search(src):
            kinds.add("server")
        elif _LOADS_MODEL.search(src):
            kinds.add("model")
    return "server" if "server" in kinds else "model" if "model" in kinds else "logic"


def pytest_collection_modifyitems(config, items):
    for item in items:
        explicit = {m.name for m in item.iter_markers() if m.name in KINDS}
        if len(explicit) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked {sorted(explicit)}: "
                                    f"give it one of {', '.join(KINDS)}")
        if not explicit:
            item.add_marker(_inferred_kind(item))
        if "chromium()" in _source(getattr(item, "function", None)):
            item.add_marker("browser")


def _kind(item: pytest.Item) -> str:
    return next(m.name for m in item.iter_markers() if m.name in KINDS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Hold each test to its kind, from its fixtures' setup to their teardown."""
    kind = _kind(item)
    patches = pytest.MonkeyPatch()
    if kind in ("logic", "model"):
        start = LocalServer.start

        def no_server(self, *a, **kw):
            if not self.is_golive:  # a stand-in process (tests/test_localserver.py)
                return start(self, *a, **kw)
            raise RuntimeError(f"{item.nodeid} is marked {kind} but starts a server: "
                               "mark it server")
        patches.setattr(LocalServer, "start", no_server)
    if kind == "logic":
        import llama_cpp

        def no_model(*a, **kw):
            raise RuntimeError(f"{item.nodeid} is marked logic but loads a model file: "
                               "mark it model (or server)")
        for fn in ("llama_model_load_from_file", "llama_model_quantize"):
            patches.setattr(llama_cpp, fn, no_model)
    try:
        yield
    finally:
        patches.undo()
