"""The eval file: YAML validated with pydantic, errors pointing at file, line and field.

An eval file names a dataset, the variants to compare and the graders:

    name: capitals
    dataset: capitals.jsonl
    defaults: {model: smollm2-135m-instruct, parameters: {temperature: 0, max_tokens: 32}}
    variants:
      - name: zero-shot
        prompt: "{{ input }}"
    graders:
      - type: contains
        case_insensitive: true

See docs/evals.md for every field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# A dataset row (Example) and how rows are read live in dataset.py; the spec uses
# them one way (dataset.py imports nothing from here).
from golive.evals.dataset import Example, load_examples
from golive.evals.errors import EvalError, EvalFileErrors

_JINJA = ImmutableSandboxedEnvironment()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_template(value: str | None) -> str | None:
    if value is not None:
        try:
            _JINJA.parse(value)
        except TemplateSyntaxError as e:
            raise ValueError(f"not a valid jinja2 template: {e.message} (template line {e.lineno})"
                             ) from None
    return value


class Parameters(_Strict):
    """Chat-completion sampling parameters (OpenAI names)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # Anything backend-specific, passed through untouched.
    extra_body: dict[str, Any] | None = None

    def request_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class FewShot(_Strict):
    """Demonstrations sent as user/assistant turns before the case."""

    path: str | None = None  # JSONL/CSV in the dataset format, relative to the eval file
    examples: list[Example] | None = None
    k: int | None = Field(None, ge=0)  # take the first k

    @model_validator(mode="after")
    def _one_source(self) -> FewShot:
        if (self.path is None) == (self.examples is None):
            raise ValueError("give exactly one of path or examples")
        return self


class VariantFields(_Strict):
    """What a variant may set; `defaults` sets the same fields for all variants."""

    system: str | None = None  # jinja2 template of the system message
    prompt: str | None = None  # jinja2 template of the user message
    model: str | None = None
    parameters: Parameters | None = None
    few_shot: FewShot | None = None
    rag: bool | None = None
    tier: Literal["auto", "default", "flex", "priority"] | None = None
    base_url: str | None = None  # an OpenAI-compatible backend (golive's server by default)
    api_key_env: str | None = None  # environment variable holding the backend's API key

    @field_validator("system", "prompt")
    @classmethod
    def _valid_templates(cls, v: str | None) -> str | None:
        return _check_template(v)

    @field_validator("rag")
    @classmethod
    def _rag_pending(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("RAG is not part of golive yet; set rag: false until the RAG "
                             "work lands (the flag is reserved for it)")
        return v


class Variant(VariantFields):
    name: str = Field(min_length=1)


class Judge(_Strict):
    """The model that grades: any OpenAI-compatible backend (golive's server by default)."""

    model: str | None = None  # default: the variants' default model
    base_url: str | None = None
    api_key_env: str | None = None
    parameters: Parameters = Field(default_factory=lambda: Parameters(temperature=0,
                                                                       max_tokens=256))


class _GraderBase(_Strict):
    name: str | None = None
    weight: float = Field(1.0, ge=0)
    # A case passes this grader when its score (0..1) is >= threshold.
    threshold: float = Field(0.5, ge=0, le=1)
    # CI gate: the grader's mean score per variant must reach this.
    min_mean: float | None = Field(None, ge=0, le=1)

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class EqualsGrader(_GraderBase):
    type: Literal["equals"]
    case_insensitive: bool = False
    strip: bool = True


class ContainsGrader(_GraderBase):
    type: Literal["contains"]
    value: str | None = None  # fixed text; default: the case's expected answer
    case_insensitive: bool = False


class RegexGrader(_GraderBase):
    type: Literal["regex"]
    pattern: str | None = None  # default: the case's expected answer, as a regex
    case_insensitive: bool = False
    fullmatch: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class JsonValidGrader(_GraderBase):
    type: Literal["json_valid"]
    extract: bool = False  # find the first JSON value inside surrounding text / code fences


class JsonSchemaGrader(_GraderBase):
    type: Literal["json_schema"]
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    schema_path: str | None = None
    extract: bool = False

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaGrader:
        if (self.schema_ is None) == (self.schema_path is None):
            raise ValueError("give exactly one of schema or schema_path")
        if self.schema_ is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(self.schema_)
            except SchemaError as e:
                raise ValueError(f"schema: not a valid JSON schema: {e.message}") from None
        return self


class NumericGrader(_GraderBase):
    type: Literal["numeric"]
    tolerance: float = Field(0.0, ge=0)  # absolute
    relative: float = Field(0.0, ge=0)  # relative to |expected|


class RougeGrader(_GraderBase):
    type: Literal["rouge"]
    variant: Literal["rouge1", "rouge2", "rougeL", "rougeLsum"] = "rougeL"
    measure: Literal["f", "precision", "recall"] = "f"
    use_stemmer: bool = False
    # unicode: keeps letters of every script (rouge-score's own tokenizer drops all non-ASCII).
    tokenizer: Literal["unicode", "default"] = "unicode"


class BertScoreGrader(_GraderBase):
    type: Literal["bertscore"]
    metric: Literal["f1", "precision", "recall"] = "f1"
    model_path: str | None = None  # default: the bundled all-MiniLM-L6-v2
    num_layers: int = Field(6, ge=1)
    idf: bool = False
    # Rescaling: X' = (X - b) / (1 - b). No published baseline exists for MiniLM,
    # so the user supplies b for P, R and F (see docs/evals.md); off by default.
    baseline: tuple[float, float, float] | None = None


class EmbeddingGrader(_GraderBase):
    type: Literal["embedding"]
    model_path: str | None = None


class JudgeGrader(_GraderBase):
    type: Literal["judge"]
    criteria: str = Field(min_length=1)
    steps: list[str] | None = None  # G-Eval evaluation steps; fixed steps score more stably
    include_expected: bool = True
    judge: Judge = Field(default_factory=Judge)


class PairwiseGrader(_GraderBase):
    type: Literal["pairwise"]
    # The variant each output is compared with, or "expected" for the reference answer.
    against: str = Field(min_length=1)
    criteria: str = "Which answer responds to the question more helpfully and correctly?"
    judge: Judge = Field(default_factory=Judge)


class PythonGrader(_GraderBase):
    type: Literal["python"]
    function: str  # "module:function"; the eval file's folder is importable
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _shape(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.]+:\w+", v):
            raise ValueError("expected 'module:function', e.g. 'my_graders:exact'")
        return v


GraderSpec = Annotated[
    EqualsGrader | ContainsGrader | RegexGrader | JsonValidGrader | JsonSchemaGrader
    | NumericGrader | RougeGrader | BertScoreGrader | EmbeddingGrader | JudgeGrader
    | PairwiseGrader | PythonGrader,
    Field(discriminator="type"),
]


class Gate(_Strict):
    """What a variant must reach, else `golive eval run` exits 1 (a CI gate)."""

    min_score: float | None = Field(None, ge=0, le=1)
    min_pass_rate: float | None = Field(None, ge=0, le=1)
    variants: list[str] | None = None  # default: all variants


class DatasetRef(_Strict):
    path: str
    limit: int | None = Field(None, ge=1)


class EvalSpec(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    dataset: DatasetRef
    defaults: VariantFields = Field(default_factory=VariantFields)
    variants: list[Variant] = Field(min_length=1)
    graders: list[GraderSpec] = Field(min_length=1)
    gate: Gate | None = None
    repeats: int = Field(1, ge=1)
    concurrency: int = Field(4, ge=1)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> EvalSpec:
        names = [v.name for v in self.variants]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ValueError(f"variants[{i}].name: duplicate variant name {n!r}")
        labels = [g.label for g in self.graders]
        for i, n in enumerate(labels):
            if n in labels[:i]:
                raise ValueError(f"graders[{i}].name: two graders are called {n!r}; "
                                 "give one a distinct name")
        for i, g in enumerate(self.graders):
            if isinstance(g, PairwiseGrader) and g.against != "expected" and g.against not in names:
                raise ValueError(f"graders[{i}].against: no variant named {g.against!r} "
                                 f"(variants: {', '.join(names)}; or 'expected')")
        if self.gate and self.gate.variants:
            for i, n in enumerate(self.gate.variants):
                if n not in names:
                    raise ValueError(f"gate.variants[{i}]: no variant named {n!r}")
        return self


class ResolvedVariant(BaseModel):
    """A variant with the defaults applied: what the runner sends."""

    name: str
    system: str | None
    prompt: str
    model: str
    parameters: Parameters
    few_shot: list[Example]
    tier: str | None
    base_url: str
    api_key_env: str | None


# ---- loading -----------------------------------------------------------------


def load_spec(path: str | Path) -> EvalSpec:
    """Parse and validate an eval file; EvalError/EvalFileErrors name file, line and field."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise EvalError("no such eval file", str(path)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise EvalError(f"not valid YAML: {e.problem or e}", f"{path}{line}") from None
    if not isinstance(data, dict):
        raise EvalError("the eval file must be a YAML mapping (name:, dataset:, variants:, "
                        "graders:)", f"{path}:1")
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as exc:
        raise EvalFileErrors([_located(path, root, err) for err in exc.errors()]) from None


def _located(path: Path, root: yaml.Node | None, err: dict[str, Any]) -> EvalError:
    raw = list(err["loc"])
    loc = [p for i, p in enumerate(raw) if not _is_union_tag(raw, i)]
    msg = err["msg"].removeprefix("Value error, ")
    # Cross-field checks report their own field inside the message ("variants[2].name: ...").
    m = re.match(r"([\w.\[\]]+): (.*)", msg, re.S)
    if m and not loc:
        loc = _parse_field(m[1])
        msg = m[2]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
        msg = (f"unknown grader type; expected one of {', '.join(sorted(_GRADER_TYPES))}"
               if err["type"] == "union_tag_invalid" else "required field is missing")
    if err["type"] == "extra_forbidden":
        msg = "unknown field" + _suggest(loc)
    elif err["type"] == "missing":
        msg = "required field is missing"
    node, exact = _node_at(root, loc)
    line = node.start_mark.line + 1 if node is not None else 1
    if err["type"] == "missing" and not exact:
        msg += " (in the mapping that starts here)"
    return EvalError(msg, f"{path}:{line}", _dotted(loc) or None)


def _is_union_tag(loc: list[Any], i: int) -> bool:
    # pydantic puts the discriminator value (graders.0.rouge.variant) or the
    # union member's type (parameters.stop.list[str]) into loc: not YAML keys.
    part = loc[i]
    if not isinstance(part, str):
        return False
    if i >= 2 and loc[i - 2] == "graders" and isinstance(loc[i - 1], int):
        return part in _GRADER_TYPES
    return bool(_TYPE_TAG.match(part))


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*|dict\[.*|tuple\[.*|function-.*|"
                       r"literal\[.*|json-or-python\[.*)$")


_GRADER_TYPES = {"equals", "contains", "regex", "json_valid", "json_schema", "numeric", "rouge",
                 "bertscore", "embedding", "judge", "pairwise", "python"}


def _parse_field(text: str) -> list[str | int]:
    out: list[str | int] = []
    for name, idx in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", text):
        out.append(int(idx) if idx else name)
    return out


def _dotted(loc: list[Any]) -> str:
    s = ""
    for p in loc:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _node_at(root: yaml.Node | None, loc: list[Any]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at `loc`, else the deepest existing parent (exact=False)."""
    node = root
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part or k.value == str(part):
                    # For a bad key point at the key; for a bad value at the value.
                    child = v if part != loc[-1] or not isinstance(v, yaml.MappingNode) else k
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
        if child is None:
            return node, False
        node = child
    return node, True


def _suggest(loc: list[Any]) -> str:
    import difflib

    if not loc or not isinstance(loc[-1], str):
        return ""
    known = _KNOWN_KEYS
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _all_fields() -> set[str]:
    names: set[str] = set()
    for cls in (EvalSpec, Variant, Parameters, FewShot, Example, Judge, Gate, DatasetRef,
                EqualsGrader, ContainsGrader, RegexGrader, JsonValidGrader, JsonSchemaGrader,
                NumericGrader, RougeGrader, BertScoreGrader, EmbeddingGrader, JudgeGrader,
                PairwiseGrader, PythonGrader):
        for name, f in cls.model_fields.items():
            names.add(f.alias or name)
    return names


_KNOWN_KEYS = sorted(_all_fields())


DEFAULT_BASE_URL_ENV = "GOLIVE_BASE_URL"


def default_base_url() -> str:
    import os

    return os.environ.get(DEFAULT_BASE_URL_ENV, "http://127.0.0.1:8000/v1")


def resolve_variants(spec: EvalSpec, base_dir: Path, base_url: str | None = None,
                     model: str | None = None) -> list[ResolvedVariant]:
    """Apply `defaults` to each variant; `base_url`/`model` override both (CLI flags)."""
    d = spec.defaults
    out = []
    for i, v in enumerate(spec.variants):
        params = (d.parameters.model_dump(exclude_none=True) if d.parameters else {})
        params.update(v.parameters.model_dump(exclude_none=True) if v.parameters else {})
        few = v.few_shot or d.few_shot
        examples: list[Example] = []
        if few is not None:
            examples = (list(few.examples) if few.examples is not None
                        else load_examples(base_dir / few.path))  # type: ignore[operator]
            if few.k is not None:
                examples = examples[:few.k]
        chosen_model = model or v.model or d.model
        if not chosen_model:
            raise EvalError("no model: set it on the variant, in defaults, or with --model",
                            None, f"variants[{i}].model")
        out.append(ResolvedVariant(
            name=v.name, system=v.system if v.system is not None else d.system,
            prompt=v.prompt or d.prompt or "{{ input }}", model=chosen_model,
            parameters=Parameters(**params), few_shot=examples, tier=v.tier or d.tier,
            base_url=(base_url or v.base_url or d.base_url or default_base_url()).rstrip("/"),
            api_key_env=v.api_key_env or d.api_key_env))
    return out
