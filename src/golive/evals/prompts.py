"""Variant + case -> chat messages (jinja2 templates, few-shot turns)."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from golive.evals.dataset import Example
from golive.evals.errors import EvalError
from golive.evals.spec import ResolvedVariant

# StrictUndefined: a typo in a template variable is an error, not an empty prompt.
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)


def _render(template: str, variables: dict[str, Any], field: str, case: str | None) -> str:
    try:
        return _ENV.from_string(template).render(**variables)
    except UndefinedError as e:
        where = f"case {case}" if case else None
        raise EvalError(f"template uses an undefined variable: {e.message}; the row has "
                        f"{sorted(variables)}", where, field) from None


def build_messages(variant: ResolvedVariant, case: Example) -> list[dict[str, str]]:
    """System message, then each few-shot example as a user/assistant pair, then the case."""
    v = f"variants[{variant.name}]"
    msgs: list[dict[str, str]] = []
    variables = {**case.inputs, "metadata": case.metadata}
    if variant.system:
        msgs.append({"role": "system",
                     "content": _render(variant.system, variables, f"{v}.system", case.id)})
    for ex in variant.few_shot:
        msgs.append({"role": "user", "content": _render(
            variant.prompt, {**ex.inputs, "metadata": ex.metadata}, f"{v}.prompt",
            f"few-shot {ex.id}")})
        msgs.append({"role": "assistant", "content": expected_text(ex.expected)})
    msgs.append({"role": "user", "content": _render(variant.prompt, variables, f"{v}.prompt",
                                                    case.id)})
    return msgs


def expected_text(expected: Any) -> str:
    """The reference as text: the first of several references, JSON for structures."""
    import json

    if isinstance(expected, list) and expected and all(isinstance(x, str) for x in expected):
        return expected[0]
    if expected is None:
        return ""
    return expected if isinstance(expected, str) else json.dumps(expected, ensure_ascii=False)


def references(expected: Any) -> list[str]:
    """Every acceptable reference: a list of strings means 'any of these'."""
    if isinstance(expected, list) and expected and all(isinstance(x, str) for x in expected):
        return list(expected)
    return [expected_text(expected)]
