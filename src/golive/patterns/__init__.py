"""Application-side levers: the half of the playbook that lives in your code.

- `parallel`: run independent steps at once; a step graph with dependencies.
- `compress`: fewer input tokens (HTML to text, prune and dedupe chunks, trim history).
- `layout`: static prefix first, so the prefix cache hits (`golive lint-prompt`).
- `route`: rules before models; a small-model-first cascade.
- `progress`: progress events for a pipeline; SSE for the web, rich for terminals.
- `tokens`: token counting with the model's own tokenizer.
- `combine`: several tasks in one structured request, short keys, per-task retries
  (see docs/structured.md).

Everything talks to OpenAI-compatible endpoints through the official `openai`
client, so it works against golive and against OpenAI alike. See docs/levers.md.
Submodules import their heavier dependencies (trafilatura, bm25s, datasketch)
only when used.
"""

from golive.patterns.combine import (
    Combined,
    CombineResult,
    Task,
    TaskResult,
    combine,
    combine_sync,
    strict_schema,
)
from golive.patterns.parallel import GraphError, StepContext, StepError, StepGraph, parallel
from golive.patterns.progress import (
    PartialText,
    PipelineDone,
    ProgressEvent,
    RichRenderer,
    StepFailed,
    StepFinished,
    StepSkipped,
    StepStarted,
    ToolCall,
    render_rich,
    sse_decode,
    sse_encode,
    sse_stream,
    stream_chat,
)

__all__ = [
    "Combined", "CombineResult", "Task", "TaskResult", "combine", "combine_sync", "strict_schema",
    "GraphError", "StepContext", "StepError", "StepGraph", "parallel",
    "PartialText", "PipelineDone", "ProgressEvent", "RichRenderer", "StepFailed", "StepFinished",
    "StepSkipped", "StepStarted", "ToolCall", "render_rich", "sse_decode", "sse_encode",
    "sse_stream", "stream_chat",
]
