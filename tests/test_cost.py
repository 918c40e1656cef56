"""Cost model: price math per tier, cached and rejected tokens, config loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from golive.observe.cost import PRICES_ENV, PriceTable, cost_of_record, default_table
from golive.observe.record import RequestRecord

# input 2.00, cached 0.50, output 8.00 per 1M (gpt-4.1-like, easy to do by hand)
CONFIG = """
[tiers]
priority = 2.0

[models.m]
input = 2.0
cached_input = 0.5
output = 8.0

[models.nocache]
input = 1.0
output = 4.0
"""


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.toml"
    path.write_text(CONFIG)
    return PriceTable.load(path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


# 1000 prompt of which 400 cached, 200 completion:
# 600 * 2.0 + 400 * 0.5 + 200 * 8.0 = 1200 + 200 + 1600 = 3000 per 1M -> $0.003
@pytest.mark.parametrize(
    ("tier", "expected"),
    [("default", 0.003), ("priority", 0.006), ("flex", 0.0015), ("batch", 0.0015)],
)
def test_cost_per_tier_with_cached_tokens(table: PriceTable, tier: str, expected: float) -> None:
    assert table.cost("m", tier, 1000, 400, 200) == pytest.approx(expected)


def test_uncached_input_is_prompt_minus_cached(table: PriceTable) -> None:
    # all cached: 1000 * 0.5 = 500 per 1M
    assert table.cost("m", "default", 1000, 1000, 0) == pytest.approx(0.0005)
    # none cached: 1000 * 2.0
    assert table.cost("m", "default", 1000, 0, 0) == pytest.approx(0.002)


def test_rejected_prediction_tokens_are_inside_completion(table: PriceTable) -> None:
    # 300 completion tokens of which 100 were rejected prediction tokens:
    # billed as 300 completion tokens, nothing extra.
    with_rejected = table.cost("m", "default", 0, 0, 300, rejected_prediction_tokens=100)
    assert with_rejected == pytest.approx(300 * 8.0 / 1e6)
    assert with_rejected == table.cost("m", "default", 0, 0, 300)
    with pytest.raises(ValueError, match="rejected_prediction_tokens"):
        table.cost("m", "default", 0, 0, 50, rejected_prediction_tokens=100)


def test_invalid_token_counts_and_tier(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="cached_tokens"):
        table.cost("m", "default", 10, 20, 0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        table.cost("m", "default", -1, 0, 0)
    with pytest.raises(ValueError, match="'auto'"):
        table.cost("m", "auto", 10, 0, 0)


def test_cached_price_defaults_to_a_tenth_of_input(table: PriceTable) -> None:
    assert table.price_for("nocache").cached_input == pytest.approx(0.1)
    assert table.cost("nocache", "default", 1000, 1000, 0) == pytest.approx(1000 * 0.1 / 1e6)


def test_packaged_table_and_unknown_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICES_ENV, raising=False)
    t = PriceTable.load(None)
    assert t.multipliers == {"default": 1.0, "priority": 2.0, "flex": 0.5, "batch": 0.5}
    d = t.models["default"]
    assert (d.input, d.cached_input, d.output) == (0.10, 0.025, 0.40)
    assert "smollm2-135m-instruct" in t.models
    assert t.price_for("no-such-model") is d
    assert t.price_for("SmolLM2-135M-Instruct") is t.models["smollm2-135m-instruct"]
    # 1M uncached prompt tokens of an unknown model on flex: 0.10 * 0.5
    assert t.cost("no-such-model", "flex", 1_000_000, 0, 0) == pytest.approx(0.05)


def test_user_file_overrides_and_merges(table: PriceTable, tmp_path: Path) -> None:
    text = "[tiers]\npriority = 1.75\n[models.default]\ninput = 1.0\noutput = 2.0\n"
    path = write(tmp_path, text)
    t = PriceTable.load(path)
    assert t.multipliers["priority"] == 1.75
    assert t.multipliers["flex"] == 0.5  # untouched keys keep packaged values
    # a re-priced model is replaced whole: cached falls back to 0.1 x input
    assert t.models["default"].cached_input == pytest.approx(0.1)
    assert "smollm2-135m-instruct" in t.models  # packaged entries survive
    assert t.cost("x", "priority", 1_000_000, 0, 0) == pytest.approx(1.75)


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[models.envmodel]\ninput = 3.0\noutput = 6.0\n")
    monkeypatch.setenv(PRICES_ENV, str(path))
    assert PriceTable.load(None).models["envmodel"].input == 3.0
    assert default_table().models["envmodel"].output == 6.0
    monkeypatch.setenv(PRICES_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        PriceTable.load(None)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[models.m]\ninput = 1.0\nouput = 2.0\n", "models.m.ouput"),
        ("[models.m]\ninput = 1.0\n", "models.m.output"),
        ('[models.m]\ninput = "cheap"\noutput = 1.0\n', "models.m.input"),
        ("[models.m]\ninput = -1.0\noutput = 1.0\n", "models.m.input"),
        ("[models.m]\ninput = true\noutput = 1.0\n", "models.m.input"),
        ("[tiers]\nturbo = 3.0\n", "tiers.turbo"),
        ('[tiers]\npriority = "x"\n', "tiers.priority"),
        ("[pricing]\nx = 1\n", "pricing"),
        ("models = 3\n", "models"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        PriceTable.load(write(tmp_path, text))


def test_missing_default_model_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"models\.default"):
        PriceTable.from_dict({"models": {"m": {"input": 1.0, "output": 1.0}}})


def record(**kw: object) -> RequestRecord:
    base: dict[str, object] = dict(
        id="r1", created=0.0, endpoint="/v1/chat/completions", model="m",
        tier_requested="flex", tier_served="flex", prompt_tokens=1000, cached_tokens=400,
        completion_tokens=200, rejected_prediction_tokens=20,
    )
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_cost_of_record(table: PriceTable) -> None:
    assert cost_of_record(record(), table) == pytest.approx(0.0015)
    assert cost_of_record(record(tier_served="priority"), table) == pytest.approx(0.006)
    # refused flex request: never charged, whatever the counts say
    assert cost_of_record(record(status=429), table) == 0.0
    # failed before any token was processed, tier never decided
    assert cost_of_record(record(status=400, tier_served="", prompt_tokens=0, cached_tokens=0,
                                 completion_tokens=0, rejected_prediction_tokens=0), table) == 0.0


def test_cost_of_record_uses_default_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICES_ENV, raising=False)
    # unknown model "m" -> default entry: 600*0.10 + 400*0.025 + 200*0.40 = 150 per 1M, flex 0.5
    assert cost_of_record(record()) == pytest.approx(150 * 0.5 / 1e6)
