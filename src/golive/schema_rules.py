"""OpenAI Structured Outputs `strict: true` rules: which JSON schemas strict mode accepts.

Pure rules over a JSON schema (a dict), with no dependency on the rest of golive,
so both sides use the same ones: the API rejects a strict `response_format` or
tool the way OpenAI would (golive.api.schema_check wraps `check` into an
InvalidRequest with OpenAI's wording), and the client-side patterns
(golive.patterns.combine) decide whether a combined schema can be sent strict.
llguidance would happily compile much more than OpenAI accepts in strict mode;
clients that test against golive and then switch to OpenAI (or the reverse) must
see the same schemas rejected.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StrictSchemaError", "check", "is_strict"]

# Documented as unsupported in strict mode (reference/openai_api.md section 6).
UNSUPPORTED = (
    "allOf",
    "not",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "patternProperties",
)
TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}

MAX_PROPERTIES = 5000
MAX_NESTING = 10
MAX_TOTAL_CHARS = 120_000  # property names + definition names + enum and const values
MAX_ENUM_VALUES = 1000
LARGE_ENUM = 250  # a string enum with more values than this ...
LARGE_ENUM_CHARS = 15_000  # ... may hold at most this many characters


def _ptr(path: tuple[str, ...]) -> str:
    """JSON Pointer of a schema location, e.g. #/properties/a/items."""
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


class StrictSchemaError(ValueError):
    """A strict-mode rule the schema breaks; the message names it and where it is
    (``'allOf' is not supported in strict mode (at #/properties/a/allOf)``)."""

    def __init__(self, msg: str, path: tuple[str, ...]) -> None:
        super().__init__(f"{msg} (at {_ptr(path)})")
        self.rule = msg
        self.pointer = _ptr(path)


_fail = StrictSchemaError


class _Checker:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.n_properties = 0
        self.n_enum = 0
        self.chars = 0
        # the only $ref targets allowed: the root and its own definitions
        self.refs = {"#"}
        for key in ("$defs", "definitions"):
            d = root.get(key)
            if isinstance(d, dict):
                self.refs.update(f"#/{key}/{name}" for name in d)

    def run(self) -> None:
        root = self.root
        if "anyOf" in root:
            raise _fail("the root schema must be an object, not 'anyOf'", ())
        if root.get("type") != "object":
            raise _fail('the root schema must have "type": "object"', ())
        for key in ("$defs", "definitions"):
            defs = root.get(key, {})
            if not isinstance(defs, dict):
                raise _fail(f"'{key}' must be an object", (key,))
            for name, sub in defs.items():
                self.chars += len(name)
                # definitions count their own nesting from 1: a $ref may sit anywhere
                self.schema(sub, (key, name), depth=0)
        self.schema(root, (), depth=0)
        if self.n_properties > MAX_PROPERTIES:
            raise _fail(f"more than {MAX_PROPERTIES} object properties in total", ())
        if self.n_enum > MAX_ENUM_VALUES:
            raise _fail(f"more than {MAX_ENUM_VALUES} enum values in total", ())
        if self.chars > MAX_TOTAL_CHARS:
            raise _fail(
                f"property names, definition names, enum and const values exceed "
                f"{MAX_TOTAL_CHARS} characters in total",
                (),
            )

    def schema(self, s: Any, path: tuple[str, ...], depth: int) -> None:
        if not isinstance(s, dict):
            raise _fail("every schema must be a JSON object", path)
        for kw in UNSUPPORTED:
            if kw in s:
                raise _fail(f"'{kw}' is not supported in strict mode", (*path, kw))
        if "$ref" in s:
            ref = s["$ref"]
            if not isinstance(ref, str) or ref not in self.refs:
                raise _fail(f"'$ref' {ref!r} must be '#' or point into '$defs'", (*path, "$ref"))
        types = s.get("type")
        type_list = types if isinstance(types, list) else [types] if types is not None else []
        for t in type_list:
            if t not in TYPES:
                raise _fail(f"unsupported type {t!r}", (*path, "type"))
        fmt = s.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise _fail(f"string format {fmt!r} is not supported", (*path, "format"))
        if "enum" in s:
            self.enum(s["enum"], (*path, "enum"))
        if "const" in s:
            self.chars += len(str(s["const"]))
        if "object" in type_list or "properties" in s:
            self.object(s, path, depth + 1)
        if "items" in s:
            self.schema(s["items"], (*path, "items"), depth)
        if "anyOf" in s:
            branches = s["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise _fail("'anyOf' must be a non-empty array", (*path, "anyOf"))
            for i, sub in enumerate(branches):
                self.schema(sub, (*path, "anyOf", str(i)), depth)

    def object(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> None:
        if depth > MAX_NESTING:
            raise _fail(f"objects are nested more than {MAX_NESTING} levels deep", path)
        if s.get("additionalProperties") is not False:
            raise _fail(
                "'additionalProperties' must be set to false on every object",
                (*path, "additionalProperties"),
            )
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise _fail("'properties' must be an object", (*path, "properties"))
        required = s.get("required", [])
        missing = [name for name in props if name not in required]
        if missing:
            raise _fail(
                f"'required' must list every property; missing {', '.join(map(repr, missing))} "
                "(use a union with null for an optional field)",
                (*path, "required"),
            )
        extra = [name for name in required if name not in props]
        if extra:
            raise _fail(
                f"'required' names unknown properties {', '.join(map(repr, extra))}",
                (*path, "required"),
            )
        self.n_properties += len(props)
        for name, sub in props.items():
            self.chars += len(name)
            self.schema(sub, (*path, "properties", name), depth)

    def enum(self, values: Any, path: tuple[str, ...]) -> None:
        if not isinstance(values, list) or not values:
            raise _fail("'enum' must be a non-empty array", path)
        self.n_enum += len(values)
        size = sum(len(str(v)) for v in values)
        self.chars += size
        if (
            len(values) > LARGE_ENUM
            and all(isinstance(v, str) for v in values)
            and size > LARGE_ENUM_CHARS
        ):
            raise _fail(
                f"a string enum with more than {LARGE_ENUM} values may hold at most "
                f"{LARGE_ENUM_CHARS} characters",
                path,
            )


def check(schema: Any) -> None:
    """Raise StrictSchemaError naming the first rule `schema` breaks in strict mode."""
    if not isinstance(schema, dict):
        raise _fail("the schema must be a JSON object", ())
    _Checker(schema).run()


def is_strict(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts `schema`."""
    try:
        check(schema)
    except StrictSchemaError:
        return False
    return True
