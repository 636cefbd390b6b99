"""The defaults of select, evaluate, finetune, search and the demo are the quantization docs/RESULTS.md
recommends from its measurements on pretrained ImageNet models."""

import dataclasses
import json
import re
from pathlib import Path

from flexiq_search.cli import build_parser, quant_config
from flexiq_search.config import RECOMMENDED_QUANT, QuantConfig, SearchConfig

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"


def recommended_in_results() -> dict:
    section = RESULTS.read_text().split("<!-- imagenet_accuracy:start -->", 1)[1]
    return json.loads(re.search(r"Recommended quantization: `(\{.*?\})`", section).group(1))


def test_results_recommend_what_the_code_defaults_to():
    assert recommended_in_results() == dataclasses.asdict(QuantConfig(**RECOMMENDED_QUANT))


def test_commands_and_searches_default_to_the_recommended_quantization():
    expected = QuantConfig(**RECOMMENDED_QUANT)
    for command in ("select", "evaluate", "finetune"):
        args = build_parser().parse_args([command, "--model", "m", "--dataset", "d", "--out", "x"]
                                         if command != "evaluate" else [command, "--model", "m", "--dataset", "d"])
        assert quant_config(args) == expected, command
    assert SearchConfig(model="resnet20", dataset="digits").quant_config() == expected
    select = build_parser().parse_args(["select", "--model", "m", "--dataset", "d", "--out", "x"])
    assert select.metric == "kl" == SearchConfig(model="resnet20", dataset="digits").metric
    baseline = build_parser().parse_args(["evaluate", "--model", "m", "--dataset", "d", "--group-size", "8",
                                          "--observer", "minmax", "--activation-shift", "static",
                                          "--no-bias-correction", "--no-keep-depthwise-int8"])
    assert quant_config(baseline) == QuantConfig()  # method.md's baseline stays one flag set away


def test_the_evolution_defaults_are_the_benchmarks_settings():
    """The evolution RESULTS measured on ImageNet models picks winners with the margin and fitness
    the strategy defaults to (its population, generations and split are sized for 240 photos)."""
    from flexiq_search.selection import create_strategy

    section = RESULTS.read_text().split("<!-- imagenet_accuracy:start -->", 1)[1]
    measured = json.loads(re.search(r"Evolution: `(\{.*?\})`", section).group(1))
    strategy = create_strategy("evolution")
    assert measured["acceptance_z"] == strategy.acceptance_z
    assert measured["metric"] == strategy.metric
