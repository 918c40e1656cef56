"""`golive serve`: the OpenAI-compatible server on the embedded engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from golive.commands.common import (
    ENGINE,
    Ctx,
    Deterministic,
    DraftTolerance,
    NoPrefixCache,
    NoPromptLookup,
    PriorityGuard,
    PrioritySoloSteps,
    Slots,
    StepTokens,
    Threads,
    engine_config,
)

if TYPE_CHECKING:
    from golive.api.app import ServerSettings
    from golive.backends.registry import Registry
    from golive.engine.engine import EngineConfig


def check_weights(weights: str) -> None:
    from golive.engine.weights import MODES

    if weights not in MODES:
        raise typer.BadParameter(f"{weights!r} is not one of {', '.join(MODES)}",
                                 param_hint="--weights")


def build_app(model: Path | None, config: Path | None, engine: EngineConfig, weights: str,
              settings: ServerSettings) -> tuple[Registry, Any]:
    """What `golive serve` serves: the backends (a config file's models, else one GGUF) and
    the FastAPI app on them."""
    from golive.api.app import create_app
    from golive.backends.config import ConfigError
    from golive.backends.registry import registry_for

    if model is not None and not model.is_file():
        raise typer.BadParameter(f"no such file: {model}", param_hint="--model")
    check_weights(weights)
    try:
        models = registry_for(str(config) if config else None, str(model) if model else None,
                              engine, weights)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from None
    return models, create_app(models, settings)


def startup_lines(models: Any, host: str, port: int) -> list[str]:
    """What `golive serve` prints before it listens: the models, and where to find things."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    lines = ["golive: serving"]
    for b in models:
        d = b.info.details
        aliases = sorted(b.info.aliases - {b.info.id})
        lines.append(f"  model      {b.info.id}" + (f" (also: {', '.join(aliases)})"
                                                     if aliases else "")
                     + f", {d.get('threads', '-')} threads")
        if d.get("weights") or d.get("file"):
            lines.append(f"  weights    {d.get('weights', '-')}: {d.get('file', '-')}")
    lines += [f"  API        {base}/v1   (OpenAI base URL)",
              f"  dashboard  {base}/dashboard",
              f"  metrics    {base}/metrics",
              f"  health     {base}/health"]
    if host != shown:
        lines.append(f"  listening on {host}:{port}")
    return lines


def serve(
    model: Annotated[Optional[Path], typer.Option(help="GGUF file (default: SmolLM2-135M-Instruct)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Model registry TOML: serve every model it lists (docs/architecture.md, 'One server, many models'); engine options given here are the defaults its entries override")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    slots: Slots = ENGINE.slots,
    ctx: Ctx = ENGINE.kv_size,
    threads: Threads = ENGINE.threads,
    step_tokens: StepTokens = ENGINE.step_tokens,
    no_prefix_cache: NoPrefixCache = not ENGINE.prefix_cache,
    no_prompt_lookup: NoPromptLookup = not ENGINE.prompt_lookup,
    flex_timeout: Annotated[float, typer.Option(help="Seconds a flex request may wait before a 429")] = 30.0,
    priority_solo_steps: PrioritySoloSteps = ENGINE.priority_solo_steps,
    priority_tpm: Annotated[Optional[float], typer.Option(help="Priority tokens/min beyond which priority is served as default")] = None,
    log_db: Annotated[Optional[str], typer.Option(help="Request-log database URL (default: SQLite in the data dir)")] = None,
    no_request_log: Annotated[bool, typer.Option("--no-request-log", help="Do not write the request log")] = False,
    log_bodies: Annotated[bool, typer.Option("--log-bodies", help="Store prompts and responses in the request log")] = False,
    prices: Annotated[Optional[Path], typer.Option(help="Price table TOML")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest file /v1/files accepts, in MB")] = 512.0,
    batch_db: Annotated[Optional[str], typer.Option(help="Batch store URL (default: SQLite in the data dir)")] = None,
    no_batch_runner: Annotated[bool, typer.Option("--no-batch-runner", help="Accept batches but run none here (another gateway on the same store does)")] = False,
    batch_window: Annotated[float, typer.Option(help="Seconds the '24h' completion window lasts (for tests)", hidden=True)] = 86400.0,
    priority_guard: PriorityGuard = ENGINE.priority_guard_s,
    deterministic: Deterministic = ENGINE.deterministic,
    draft_tolerance: DraftTolerance = ENGINE.draft_tolerance,
    weights: Annotated[str, typer.Option(help="auto: load a cached Q8_0 copy of Q4_1/Q5_x weights, which batch several times faster on CPU (docs/architecture.md); original: the file as given; q8_0: always convert")] = "auto",
) -> None:
    """Start the OpenAI-compatible server on the embedded engine."""
    import uvicorn

    from golive.api.app import ServerSettings
    from golive.batch.service import BatchSettings

    settings = ServerSettings(flex_queue_timeout=flex_timeout, priority_tokens_per_min=priority_tpm,
                              log_db=log_db, request_log=not no_request_log, log_bodies=log_bodies,
                              prices=str(prices) if prices else None,
                              batch=BatchSettings(db=batch_db, runner=not no_batch_runner,
                                                  window_s=batch_window,
                                                  max_upload_bytes=int(max_upload_mb * 1024 * 1024)))
    engine = engine_config(slots=slots, ctx=ctx, threads=threads, step_tokens=step_tokens,
                           no_prefix_cache=no_prefix_cache, no_prompt_lookup=no_prompt_lookup,
                           priority_solo_steps=priority_solo_steps,
                           priority_guard=priority_guard, deterministic=deterministic,
                           draft_tolerance=draft_tolerance)
    models, app = build_app(model, config, engine, weights, settings)
    typer.echo("\n".join(startup_lines(models, host, port)), err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
