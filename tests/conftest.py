"""One real golive server per test session (more only where a test needs other flags)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
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

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

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
