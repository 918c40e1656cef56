"""What several commands share: engine options (from EngineConfig), extras, one-line errors."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Annotated, NoReturn

import typer

from golive import extras
from golive.engine.engine import EngineConfig

ENGINE = EngineConfig()  # the option defaults below are its fields: one source of truth

# Engine options, declared once for `golive serve` and `golive batch run`.
Slots = Annotated[int, typer.Option(help="Sequences decoded together")]
Ctx = Annotated[int, typer.Option(
    help="KV cache size in tokens, shared by all sequences and the prefix cache")]
Threads = Annotated[int, typer.Option(help="CPU threads (0 = all cores)")]
StepTokens = Annotated[int, typer.Option(help="Prefill tokens per engine step")]
NoPrefixCache = Annotated[bool, typer.Option("--no-prefix-cache",
                                             help="Never reuse KV across requests")]
NoPromptLookup = Annotated[bool, typer.Option(
    "--no-prompt-lookup", help="No speculative drafts from n-grams of the prompt")]
PrioritySoloSteps = Annotated[int, typer.Option(
    min=0, help="Engine steps in a row a priority prefill may run without lower tiers "
                "(0 = always share)")]
PriorityGuard = Annotated[float, typer.Option(
    min=0, help="Seconds after a priority request during which lower tiers prefill in small "
                "chunks and draft nothing, so priority requests land in short steps (0 = off)")]
Deterministic = Annotated[bool, typer.Option(
    "--deterministic", help="Batch-invariant prompts: with --threads 1 the output does not "
                            "depend on what the prefix cache holds (costs up to 64 recomputed "
                            "tokens per cached request)")]
DraftTolerance = Annotated[float, typer.Option(
    min=0, help="At temperature 0, accept a draft (prediction, prompt lookup) token whose logit is "
                "within this much of the best: the batch-shape noise of llama.cpp's CPU kernels "
                "(0 = exact argmax; --deterministic is always exact)")]


def engine_config(*, slots: int = ENGINE.slots, ctx: int = ENGINE.kv_size,
                  threads: int = ENGINE.threads, step_tokens: int = ENGINE.step_tokens,
                  no_prefix_cache: bool = not ENGINE.prefix_cache,
                  no_prompt_lookup: bool = not ENGINE.prompt_lookup,
                  priority_solo_steps: int = ENGINE.priority_solo_steps,
                  priority_guard: float = ENGINE.priority_guard_s,
                  deterministic: bool = ENGINE.deterministic,
                  draft_tolerance: float = ENGINE.draft_tolerance) -> EngineConfig:
    """The EngineConfig the engine options ask for; every other field keeps its default."""
    return dataclasses.replace(
        ENGINE, slots=slots, kv_size=ctx, threads=threads, step_tokens=step_tokens,
        prefix_cache=not no_prefix_cache, prompt_lookup=not no_prompt_lookup,
        priority_solo_steps=priority_solo_steps, priority_guard_s=priority_guard,
        deterministic=deterministic, draft_tolerance=draft_tolerance)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit `code`."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


EXIT_MISSING_EXTRA = 2


@contextlib.contextmanager
def extra_hint(what: str) -> Iterator[None]:
    """Turn a missing extra, announced (MissingExtra) or found late (ModuleNotFoundError of one
    of an extra's modules), into the one-line install hint and exit 2."""
    try:
        yield
    except extras.MissingExtra as e:
        fail(extras.hint(e.extra, what), EXIT_MISSING_EXTRA)
    except ModuleNotFoundError as e:
        extra = extras.extra_for(e.name)
        if extra is None:
            raise
        fail(extras.hint(extra, what), EXIT_MISSING_EXTRA)


def needs_extra(extra: str, *modules: str, what: str) -> None:
    """Exit with the one-line hint unless `modules` (none given: all of `extra`'s) are
    installed."""
    with extra_hint(what):
        extras.require(extra, *modules, what=what)
