"""`golive`: one command, sub-commands for serving, chatting and inspecting."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from golive.batch.offline import batch_app
from golive.evals.cli import eval_app
from golive.observe.logview import log_app

app = typer.Typer(help="golive: take LLM applications live, on your own machine.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(log_app, name="log")
app.add_typer(eval_app, name="eval")
app.add_typer(batch_app, name="batch")


def _engine_config(slots: int, ctx: int, threads: int, step_tokens: int, no_prefix_cache: bool,
                   no_prompt_lookup: bool = False, priority_solo_steps: int = 2,
                   deterministic: bool = False, priority_guard: float = 10.0):
    from golive.engine.engine import EngineConfig

    return EngineConfig(slots=slots, kv_size=ctx, threads=threads, step_tokens=step_tokens,
                        prefix_cache=not no_prefix_cache, prompt_lookup=not no_prompt_lookup,
                        priority_solo_steps=priority_solo_steps, deterministic=deterministic,
                        priority_guard_s=priority_guard)


def _check_weights(weights: str) -> None:
    from golive.engine.weights import MODES

    if weights not in MODES:
        raise typer.BadParameter(f"{weights!r} is not one of {', '.join(MODES)}",
                                 param_hint="--weights")


@app.command()
def serve(
    model: Annotated[Optional[Path], typer.Option(help="GGUF file (default: SmolLM2-135M-Instruct)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Model registry TOML: serve every model it lists (docs/architecture.md, 'One server, many models'); engine options given here are the defaults its entries override")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    slots: Annotated[int, typer.Option(help="Sequences decoded together")] = 16,
    ctx: Annotated[int, typer.Option(help="KV cache size in tokens, shared by all sequences and the prefix cache")] = 16384,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all cores)")] = 0,
    step_tokens: Annotated[int, typer.Option(help="Prefill tokens per engine step")] = 256,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="Never reuse KV across requests")] = False,
    no_prompt_lookup: Annotated[bool, typer.Option("--no-prompt-lookup", help="No speculative drafts from n-grams of the prompt")] = False,
    flex_timeout: Annotated[float, typer.Option(help="Seconds a flex request may wait before a 429")] = 30.0,
    priority_solo_steps: Annotated[int, typer.Option(min=0, help="Engine steps in a row a priority prefill may run without lower tiers (0 = always share)")] = 2,
    priority_tpm: Annotated[Optional[float], typer.Option(help="Priority tokens/min beyond which priority is served as default")] = None,
    log_db: Annotated[Optional[str], typer.Option(help="Request-log database URL (default: SQLite in the data dir)")] = None,
    no_request_log: Annotated[bool, typer.Option("--no-request-log", help="Do not write the request log")] = False,
    log_bodies: Annotated[bool, typer.Option("--log-bodies", help="Store prompts and responses in the request log")] = False,
    prices: Annotated[Optional[Path], typer.Option(help="Price table TOML")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest file /v1/files accepts, in MB")] = 512.0,
    batch_db: Annotated[Optional[str], typer.Option(help="Batch store URL (default: SQLite in the data dir)")] = None,
    no_batch_runner: Annotated[bool, typer.Option("--no-batch-runner", help="Accept batches but run none here (another gateway on the same store does)")] = False,
    batch_window: Annotated[float, typer.Option(help="Seconds the '24h' completion window lasts (for tests)", hidden=True)] = 86400.0,
    priority_guard: Annotated[float, typer.Option(min=0, help="Seconds after a priority request during which lower tiers prefill in small chunks and draft nothing, so priority requests land in short steps (0 = off)")] = 10.0,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Batch-invariant prompts: with --threads 1 the output does not depend on what the prefix cache holds (costs up to 64 recomputed tokens per cached request)")] = False,
    weights: Annotated[str, typer.Option(help="auto: load a cached Q8_0 copy of Q4_1/Q5_x weights, which batch several times faster on CPU (docs/architecture.md); original: the file as given; q8_0: always convert")] = "auto",
) -> None:
    """Start the OpenAI-compatible server on the embedded engine."""
    import uvicorn

    from golive.api.app import ServerSettings, create_app
    from golive.backends.config import ConfigError
    from golive.backends.registry import registry_for
    from golive.batch.service import BatchSettings

    if model is not None and not model.is_file():
        raise typer.BadParameter(f"no such file: {model}", param_hint="--model")
    _check_weights(weights)
    try:
        models = registry_for(str(config) if config else None, str(model) if model else None,
                              _engine_config(slots, ctx, threads, step_tokens, no_prefix_cache,
                                             no_prompt_lookup, priority_solo_steps,
                                             deterministic, priority_guard),
                              weights)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from None
    settings = ServerSettings(flex_queue_timeout=flex_timeout, priority_tokens_per_min=priority_tpm,
                              log_db=log_db, request_log=not no_request_log, log_bodies=log_bodies,
                              prices=str(prices) if prices else None,
                              batch=BatchSettings(db=batch_db, runner=not no_batch_runner,
                                                  window_s=batch_window,
                                                  max_upload_bytes=int(max_upload_mb * 1024 * 1024)))
    for b in models:
        typer.echo(f"golive: serving {b.info.id} ({b.info.details.get('weights', '-')} weights, "
                   f"{b.info.details.get('threads', '-')} threads)", err=True)
    typer.echo(f"golive: http://{host}:{port}/v1", err=True)
    uvicorn.run(create_app(models, settings), host=host, port=port, log_level="warning")


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    model: Annotated[Optional[Path], typer.Option(help="GGUF file")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt")] = None,
    max_tokens: Annotated[int, typer.Option(help="Completion token limit")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 0.7,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling")] = None,
    url: Annotated[Optional[str], typer.Option(help="Talk to a running server instead (base URL)")] = None,
) -> None:
    """Ask once and stream the answer to the terminal."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    if url:
        _chat_remote(url, messages, max_tokens, temperature, seed)
        return
    import asyncio

    from golive.backends.embedded import EmbeddedBackend
    from golive.engine.engine import EngineConfig
    from golive.engine.types import Delta, GenerationRequest, SamplingParams

    backend = EmbeddedBackend(str(model) if model else None, EngineConfig(slots=1, kv_size=8192))
    backend.start()

    async def run() -> None:
        req = GenerationRequest(backend.render_chat(messages),
                                SamplingParams(temperature=temperature, seed=seed),
                                max_tokens=max_tokens)
        async for ev in backend.generate(req):
            if isinstance(ev, Delta):
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        sys.stdout.write("\n")

    try:
        asyncio.run(run())
    finally:
        backend.close()


def _chat_remote(url: str, messages: list[dict], max_tokens: int, temperature: float,
                 seed: int | None) -> None:
    import json

    import httpx

    body = {"model": "default", "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "stream": True}
    models = httpx.get(url.rstrip("/") + "/models").json()
    body["model"] = models["data"][0]["id"]
    with httpx.stream("POST", url.rstrip("/") + "/chat/completions", json=body,
                      timeout=600) as r:
        if r.status_code != 200:
            r.read()
            raise typer.BadParameter(r.text)
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for c in json.loads(line[6:]).get("choices", []):
                    sys.stdout.write(c["delta"].get("content") or "")
                    sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def models() -> None:
    """List the models golive can serve."""
    from rich.console import Console
    from rich.table import Table

    from golive.engine.model import DEFAULT_MODEL_ID, default_model_path

    t = Table("id", "file", "size")
    try:
        p = default_model_path()
        t.add_row(DEFAULT_MODEL_ID + " (default)", str(p), f"{p.stat().st_size / 1e6:.0f} MB")
    except FileNotFoundError as exc:
        t.add_row("(default missing)", str(exc), "")
    for d in filter(None, os.environ.get("GOLIVE_MODELS_PATH", "").split(os.pathsep)):
        for p in sorted(Path(d).glob("*.gguf")):
            t.add_row(p.stem, str(p), f"{p.stat().st_size / 1e6:.0f} MB")
    Console().print(t)


# ---- application levers (golive.patterns) ----------------------------------------

from golive.levers_demo import levers_app  # noqa: E402
from golive.observe.audit import audit_command  # noqa: E402
from golive.patterns.lint import lint_prompt_command  # noqa: E402

app.add_typer(levers_app, name="levers")
app.command("lint-prompt")(lint_prompt_command)
app.command("audit")(audit_command)


if __name__ == "__main__":
    app()
