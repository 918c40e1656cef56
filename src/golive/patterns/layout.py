"""Static prefix first: find dynamic content that breaks the prefix cache.

A prefix cache (golive's engine, OpenAI's prompt caching) reuses the longest
token prefix a request shares with earlier ones. One date or request id at
the top of a system prompt makes every later token different per request, so
none of it is cached. This module

- flags dynamic content (dates, times, ids, user-input placeholders, values
  that differ between requests) that sits ahead of static content,
- measures the prefix a set of requests share, as a prefix cache would see
  it (tokens of each request already seen at the start of an earlier one),
- proposes the reordering (static paragraphs first) and measures it too.

    from golive.patterns import layout

    report = layout.lint_prompt(messages)            # one request
    for f in report.findings: print(f)
    stats = layout.analyze_requests(requests)        # many: measured gain
    print(stats.cacheable_tokens, "->", stats.cacheable_tokens_reordered)

`golive lint-prompt FILE|-` is the command-line form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golive.patterns.tokens import (
    Message,
    Tokenizer,
    as_tokenizer,
    content_text,
    count,
    encode_chat,
)

_MONTHS = ("jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
# (kind, pattern): what makes a piece of text differ from one request to the next
DETECTORS: list[tuple[str, re.Pattern[str]]] = [
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")),
    ("date", re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b")),
    ("date", re.compile(rf"\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b", re.I)),
    ("date", re.compile(rf"\b\d{{1,2}} (?:{_MONTHS})\.? \d{{4}}\b", re.I)),
    ("date", re.compile(r"\b(?:today|tomorrow|yesterday) is\b|\bcurrent (?:date|time)\b", re.I)),
    ("time", re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?:am|pm|utc|gmt|z)?\b", re.I)),
    ("id", re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)),
    ("id", re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b", re.I)),
    ("id", re.compile(r"\b(?:id|session|request|req|order|user|account|ticket|txn)"
                      r"(?:[ _-]?id)?\s*[:#=]\s*[\w-]{3,}", re.I)),
    ("number", re.compile(r"\b\d{6,}\b")),
    ("placeholder", re.compile(r"\{\{\s*[\w.]+\s*\}\}|\{[A-Za-z_]\w*\}|\$\{\w+\}|%\(\w+\)s"
                               r"|<(?:user_input|input|query|question|name)>", re.I)),
]


@dataclass(slots=True)
class Segment:
    """One paragraph of one message."""

    message: int
    role: str
    index: int  # paragraph number within the message
    text: str
    tokens: int = 0
    reasons: list[str] = field(default_factory=list)  # why it is dynamic

    @property
    def dynamic(self) -> bool:
        return bool(self.reasons)


@dataclass(slots=True)
class Finding:
    message: int
    role: str
    paragraph: int
    kinds: list[str]
    excerpt: str
    static_tokens_after: int  # static tokens this segment keeps out of the cache

    def __str__(self) -> str:
        return (f"message {self.message} ({self.role}), paragraph {self.paragraph}: "
                f"{', '.join(self.kinds)} ahead of {self.static_tokens_after} static tokens: "
                f"{self.excerpt!r}")


@dataclass(slots=True)
class LintReport:
    segments: list[Segment]
    findings: list[Finding]
    reordered: list[Message]  # the proposal: static paragraphs first within each message
    static_tokens: int
    static_tokens_after_dynamic: int  # static tokens a prefix cache cannot reach today

    @property
    def ok(self) -> bool:
        return not self.findings


def detect(text: str, extra: Sequence[tuple[str, re.Pattern[str]]] = ()) -> list[str]:
    """Why `text` looks per-request: ['date: 2025-01-02', 'id: ...'] (empty if static)."""
    out = []
    for kind, pat in (*DETECTORS, *extra):
        m = pat.search(text)
        if m:
            out.append(f"{kind}: {m.group(0)}")
    return out


def as_messages(prompt: str | Sequence[Message] | dict[str, Any]) -> list[Message]:
    """A prompt in any common shape: plain text, a message list, a request body."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict):
        if "messages" in prompt:
            return list(prompt["messages"])
        if "body" in prompt:  # a batch input line
            return as_messages(prompt["body"])
        if "prompt" in prompt and isinstance(prompt["prompt"], str):
            return [{"role": "user", "content": prompt["prompt"]}]
        if "input" in prompt:  # Responses API
            inp = prompt["input"]
            return as_messages(inp if isinstance(inp, str) else list(inp))
        raise ValueError("request has no 'messages', 'prompt' or 'input'")
    return list(prompt)


def split_segments(messages: Sequence[Message]) -> list[Segment]:
    segs = []
    for mi, m in enumerate(messages):
        text = content_text(m)
        paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        if len(paras) == 1 and "\n" in text.strip():
            paras = [ln for ln in text.split("\n") if ln.strip()]
        for pi, p in enumerate(paras or [""]):
            segs.append(Segment(mi, m.get("role", "user"), pi, p))
    return segs


def _is_last_user_turn(seg: Segment, messages: Sequence[Message]) -> bool:
    # The final user message of a conversation is per-request by nature and
    # already last. A lone message (a plain-text prompt) is linted paragraph by
    # paragraph instead.
    return len(messages) > 1 and seg.message == len(messages) - 1 and seg.role == "user"


def lint_prompt(prompt: str | Sequence[Message] | dict[str, Any],
                tokenizer: Tokenizer | Callable[[str], Any] | None = None, *,
                varying: set[tuple[int, int]] | None = None,
                extra_detectors: Sequence[tuple[str, re.Pattern[str]]] = ()) -> LintReport:
    """Flag dynamic paragraphs that come before static ones, and propose an order.

    `varying` marks (message, paragraph) positions known to differ between
    requests (analyze_requests finds them), for per-request values no pattern
    can recognise, such as a customer's name.
    """
    tok = as_tokenizer(tokenizer)
    messages = as_messages(prompt)
    segs = split_segments(messages)
    for s in segs:
        s.tokens = count(tok, s.text)
        s.reasons = detect(s.text, extra_detectors)
        if varying and (s.message, s.index) in varying:
            s.reasons.append("varies between requests")
        if _is_last_user_turn(s, messages):
            s.reasons.append("final user turn")
    static_after = [0] * (len(segs) + 1)
    for i in range(len(segs) - 1, -1, -1):
        s = segs[i]
        static_after[i] = static_after[i + 1] + (0 if s.dynamic else s.tokens)
    findings = []
    first_dynamic = None
    for i, s in enumerate(segs):
        if s.dynamic and static_after[i + 1] > 0 and not _is_last_user_turn(s, messages):
            findings.append(Finding(s.message, s.role, s.index,
                                    list(dict.fromkeys(r.split(":")[0] for r in s.reasons)),
                                    _excerpt(s.text), static_after[i + 1]))
            if first_dynamic is None:
                first_dynamic = i
    return LintReport(
        segs, findings, propose_order(messages, segs),
        static_tokens=sum(s.tokens for s in segs if not s.dynamic),
        static_tokens_after_dynamic=static_after[first_dynamic + 1] if first_dynamic is not None
        else 0,
    )


def propose_order(messages: Sequence[Message], segs: Sequence[Segment]) -> list[Message]:
    """Within each message, static paragraphs first, dynamic ones after them.

    Messages themselves keep their order (moving a turn changes the
    conversation). The final user turn is left alone: it is last already.
    """
    out = []
    for mi, m in enumerate(messages):
        own = [s for s in segs if s.message == mi]
        if not any(s.dynamic for s in own) or (own and _is_last_user_turn(own[0], messages)):
            out.append(dict(m))
            continue
        ordered = [s for s in own if not s.dynamic] + [s for s in own if s.dynamic]
        sep = "\n\n" if "\n\n" in content_text(m) or len(own) == 1 else "\n"
        out.append({**m, "content": sep.join(s.text for s in ordered)})
    return out


def _excerpt(text: str, n: int = 70) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


# ---- many requests -------------------------------------------------------------------


@dataclass(slots=True)
class PrefixStats:
    requests: int
    prompt_tokens: int
    # tokens at the start of each request already seen at the start of an
    # earlier request: what a warm prefix cache serves as cached_tokens
    cacheable_tokens: int
    cacheable_tokens_reordered: int
    findings: dict[str, int]  # "message 0 (system) paragraph 0" -> requests it occurs in
    kinds: dict[str, list[str]]  # same keys -> what was found there ("date", "id", ...)
    example: LintReport | None

    @property
    def share(self) -> float:
        return self.cacheable_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def share_reordered(self) -> float:
        return self.cacheable_tokens_reordered / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def gain_tokens(self) -> int:
        return self.cacheable_tokens_reordered - self.cacheable_tokens


def cacheable_prefix_tokens(token_lists: Iterable[Sequence[int]]) -> list[int]:
    """For each sequence, the longest prefix it shares with any earlier one.

    A token trie: walking a new sequence down the trie as far as it matches
    gives exactly what a radix-tree prefix cache holding every earlier
    request would serve.
    """
    root: dict[int, dict] = {}
    out = []
    for toks in token_lists:
        node, n = root, 0
        for t in toks:
            nxt = node.get(t)
            if nxt is None:
                break
            node, n = nxt, n + 1
        out.append(n)
        node = root
        for t in toks:
            node = node.setdefault(t, {})
    return out


def varying_positions(requests: Sequence[Sequence[Message]]) -> set[tuple[int, int]]:
    """(message, paragraph) positions whose text differs across requests.

    Only positions present in every request are compared, excluding the final
    user turn (expected to vary).
    """
    if len(requests) < 2:
        return set()
    texts: dict[tuple[int, int], set[str]] = {}
    present: dict[tuple[int, int], int] = {}
    for msgs in requests:
        for s in split_segments(msgs):
            if _is_last_user_turn(s, msgs):
                continue
            texts.setdefault((s.message, s.index), set()).add(s.text)
            present[(s.message, s.index)] = present.get((s.message, s.index), 0) + 1
    return {k for k, v in texts.items() if len(v) > 1 and present[k] == len(requests)}


def analyze_requests(requests: Iterable[str | Sequence[Message] | dict[str, Any]],
                     tokenizer: Tokenizer | Callable[[str], Any] | None = None) -> PrefixStats:
    """Measure the shared prefix of a set of requests now and after reordering."""
    tok = as_tokenizer(tokenizer)
    msgs = [as_messages(r) for r in requests]
    varying = varying_positions(msgs)
    before, after = [], []
    findings: dict[str, int] = {}
    kinds: dict[str, list[str]] = {}
    example = None
    for m in msgs:
        rep = lint_prompt(m, tok, varying=varying)
        if rep.findings and example is None:
            example = rep
        for f in rep.findings:
            key = f"message {f.message} ({f.role}) paragraph {f.paragraph}"
            findings[key] = findings.get(key, 0) + 1
            kinds[key] = list(dict.fromkeys([*kinds.get(key, []), *f.kinds]))
        before.append(encode_chat(tok, m))
        after.append(encode_chat(tok, rep.reordered))
    return PrefixStats(
        requests=len(msgs),
        prompt_tokens=sum(len(t) for t in before),
        cacheable_tokens=sum(cacheable_prefix_tokens(before)),
        cacheable_tokens_reordered=sum(cacheable_prefix_tokens(after)),
        findings=findings,
        kinds=kinds,
        example=example,
    )


# ---- inputs ----------------------------------------------------------------------


def load_requests(text: str) -> list[list[Message]]:
    """Requests from text: JSONL (one body or batch line per line), a JSON body or
    message list, or else the text itself as one prompt."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty input: nothing to lint")
    if stripped[0] in "[{":
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, list) and doc and all(isinstance(m, dict) and "role" in m for m in doc):
            return [as_messages(doc)]
        if isinstance(doc, dict):
            return [as_messages(doc)]
        lines = [ln for ln in stripped.splitlines() if ln.strip()]
        out = []
        for n, ln in enumerate(lines, 1):
            try:
                out.append(as_messages(json.loads(ln)))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                if doc is None and n == 1:
                    break  # not JSON after all: a plain-text prompt starting with a bracket
                raise ValueError(f"line {n}: not a request body: {exc}") from None
        else:
            return out
    return [as_messages(text)]


def requests_from_log(url: str | None = None, limit: int | None = 1000,
                      endpoint: str = "/v1/chat/completions") -> list[list[Message]]:
    """Chat requests from golive's request log, oldest first (needs `--log-bodies`)."""
    from golive.observe.requestlog import RequestLog

    with RequestLog(url) as log:
        recs = log.query(endpoint=endpoint, limit=limit)
    out = [as_messages(json.loads(r.request_body)) for r in reversed(recs) if r.request_body]
    if recs and not out:
        raise ValueError("the request log holds no request bodies: start the server with "
                         "--log-bodies")
    return out


def read_source(path: str) -> str:
    import sys

    return sys.stdin.read() if path == "-" else Path(path).read_text()
