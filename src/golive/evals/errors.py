"""Errors an eval raises for bad input: always naming the file, the line and the field."""

from __future__ import annotations


class EvalError(Exception):
    """A problem with an eval file or dataset that the user must fix.

    `where` is "file:line" (or just the file), `field` a dotted path such as
    `variants[1].parameters.temperature`.
    """

    def __init__(self, message: str, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        parts = [p for p in (where, field) if p]
        super().__init__(": ".join(parts + [message]))


class EvalFileErrors(EvalError):
    """Several problems found in one eval file (all reported at once)."""

    def __init__(self, errors: list[EvalError]):
        self.errors = errors
        Exception.__init__(self, "\n".join(str(e) for e in errors))
        self.message = str(self)
        self.where = errors[0].where if errors else None
        self.field = errors[0].field if errors else None
