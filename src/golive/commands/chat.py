"""`golive chat`: ask once, stream the answer (embedded engine, or a running server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from golive.commands.common import fail
from golive.commands.urls import ServerError, api_base, error_line, first_model


def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    model: Annotated[Optional[Path], typer.Option(help="GGUF file")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt")] = None,
    max_tokens: Annotated[int, typer.Option(help="Completion token limit")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 0.7,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling")] = None,
    url: Annotated[Optional[str], typer.Option(help="Talk to a running server instead (base URL, with or without /v1)")] = None,
) -> None:
    """Ask once and stream the answer to the terminal."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    if url:
        try:
            chat_remote(api_base(url), messages, max_tokens, temperature, seed)
        except ServerError as e:
            fail(f"golive chat: {e}")
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


def chat_remote(api: str, messages: list[dict], max_tokens: int, temperature: float,
                seed: int | None) -> None:
    """Stream one chat completion from the server at `api` (an OpenAI base URL)."""
    import json

    import httpx

    body = {"model": first_model(api), "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "stream": True}
    try:
        with httpx.stream("POST", api + "/chat/completions", json=body, timeout=600) as r:
            if r.status_code != 200:
                r.read()
                raise ServerError(f"{api}/chat/completions answered "
                                  f"{error_line(r.status_code, r.text)}")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:  # an error after the stream started
                    sys.stdout.write("\n")
                    raise ServerError(error_line(200, line[6:]).replace("HTTP 200: ", ""))
                for c in event.get("choices", []):
                    sys.stdout.write(c["delta"].get("content") or "")
                    sys.stdout.flush()
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach {api}: {e or type(e).__name__}") from None
    sys.stdout.write("\n")
