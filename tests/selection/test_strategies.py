"""Every registered selection strategy meets one contract (swept over the registry)."""

import copy

import pytest
import torch

from flexiq_search.quant.convert import (
    capture_layer_inputs, convert_model, mac_share_4bit, mixed_layers, set_ratio,
)
from flexiq_search.errors import FlexiqError
from flexiq_search.selection import Selection, apply_selection, create_strategy, list_strategies
from flexiq_search.selection.base import STRATEGIES

LEVELS = [0.25, 0.5, 0.75, 1.0]


# Small settings so that the sweep stays quick; the contract does not depend on them.
QUICK_OPTIONS = {"evolution": {"population": 6, "generations": 2}, "hawq": {"probes": 2}}


def make(method, **kwargs):
    return create_strategy(method, **QUICK_OPTIONS.get(method, {}), **kwargs)


@pytest.mark.parametrize("budget", ["global", "per-layer"])
@pytest.mark.parametrize("method", list_strategies())
def test_strategy_contract(method, budget, converted, images):
    if method == "hawq" and budget == "per-layer":
        with pytest.raises(FlexiqError, match="global budget"):
            make(method, budget=budget)
        return
    selection = make(method, budget=budget, seed=3).select(converted, LEVELS, images)
    again = make(method, budget=budget, seed=3).select(converted, LEVELS, images)
    for result in (selection, again):
        result.provenance.pop("timing", None)  # wall time is the one thing allowed to differ
    assert selection.to_json() == again.to_json(), "deterministic for a seed"
    assert Selection.from_json(selection.to_json()).to_json() == selection.to_json()
    converted = copy.deepcopy(converted)  # selections install their shifts: keep the shared model intact
    layers = mixed_layers(converted, eligible_only=True)
    assert set(selection.layers) == set(layers)
    for name, chosen in selection.layers.items():
        assert sorted(chosen.order) == list(range(layers[name].n_groups)), "a permutation of the groups"
        assert chosen.boundaries == sorted(chosen.boundaries), "nested levels"
    apply_selection(converted, selection)
    total = sum(float(l.group_macs().sum()) for l in layers.values())
    for ratio in LEVELS:
        set_ratio(converted, ratio)
        if budget == "global":
            unit = (lambda l: l.group_macs().sum()) if STRATEGIES[method].granularity == "layer" else (
                lambda l: l.group_macs().max())
            slack = max(float(unit(l)) for l in layers.values()) / total
            assert abs(mac_share_4bit(converted) - ratio) <= slack
        else:
            for layer in layers.values():
                macs = layer.group_macs()
                share = float(macs[layer.low_bit_groups()].sum() / macs.sum())
                assert abs(share - ratio) <= float(macs.max() / macs.sum())


def test_range_noise_estimate_tracks_the_measured_layer_error(trained_resnet20, digits_batches):
    """The range score predicts which groups hurt their layer's output most when lowered alone.

    Pooled over all layers (what the global ranking compares) the rank correlation is high; within
    one layer, where groups differ less, it is weaker but still positive.
    """
    from flexiq_search.config import QuantConfig
    from flexiq_search.selection.range import range_noise

    model = convert_model(trained_resnet20, digits_batches, QuantConfig(group_size=4))
    inputs = capture_layer_inputs(model, torch.cat(digits_batches))
    def rank_correlation(a, b):
        ranks = torch.stack([torch.tensor(a).argsort().argsort(), torch.tensor(b).argsort().argsort()]).double()
        return float(torch.corrcoef(ranks)[0, 1])

    correlations, all_measured, all_estimated = [], [], []
    for name, layer in mixed_layers(model, eligible_only=True).items():
        x = inputs[name]
        with torch.no_grad():
            reference = layer(x)
            measured = []
            for group in range(layer.n_groups):
                order = [group] + [g for g in range(layer.n_groups) if g != group]
                layer.apply_selection(order, [1], [1.0])
                layer.set_ratio(1.0)
                measured.append(float((layer(x) - reference).square().mean() / reference.square().mean()))
                layer.set_ratio(0)
        estimate = range_noise(layer).tolist()
        correlations.append(rank_correlation(measured, estimate))
        all_measured += measured
        all_estimated += estimate
    assert rank_correlation(all_measured, all_estimated) > 0.8
    assert sum(correlations) / len(correlations) > 0.3, correlations


def test_bad_levels_are_refused(converted):
    with pytest.raises(ValueError):
        create_strategy("range").select(converted, [0.5, 1.5])


@pytest.mark.parametrize("activation_shift, group_size, bias_correction",
                         [("static", 4, False), ("dynamic", 4, False), ("static", 1, False), ("dynamic", 1, True)])
def test_per_group_errors_equal_whole_layer_differences(activation_shift, group_size, bias_correction,
                                                        sample_photos):
    """The greedy's per-group error comes from input moments (or the group's own channels); it must
    equal lowering that group in the whole layer (dense, depthwise and grouped convs, linear), less
    the mean shift where bias correction cancels it."""
    from flexiq_search.config import QuantConfig
    from flexiq_search.quant.convert import capture_layer_inputs, convert_model, mixed_layers
    from flexiq_search.selection.greedy_error import layer_output_errors

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU(),  # depthwise
        torch.nn.Conv2d(16, 32, 3, padding=1, groups=16), torch.nn.ReLU(),  # depthwise, channel multiplier 2
        torch.nn.Conv2d(32, 24, 1, groups=2), torch.nn.ReLU(),  # grouped: the whole-layer fallback
        torch.nn.Conv2d(24, 24, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(24, 20), torch.nn.Hardswish(), torch.nn.Linear(20, 5)).eval()
    model = convert_model(net, [sample_photos], QuantConfig(group_size=group_size, activation_shift=activation_shift,
                                                             bias_correction=bias_correction,
                                                             keep_first_int8=False, keep_last_int8=False))
    errors = layer_output_errors(model, sample_photos)
    inputs = capture_layer_inputs(model, sample_photos)
    for name, layer in mixed_layers(model, eligible_only=True).items():
        layer = copy.deepcopy(layer)
        reference = layer.integer_accumulator(inputs[name])
        scale = layer._view_channels(layer.act_scale * layer.weight_scale, reference.dim()).double()
        expected = torch.zeros(layer.n_groups, dtype=torch.float64)
        for group in range(layer.n_groups):
            layer.set_low_bit_groups(torch.arange(layer.n_groups) == group)
            delta = (layer.integer_accumulator(inputs[name]) - reference).double() * scale
            if bias_correction:
                dims = [d for d in range(delta.dim()) if d != layer.channel_dim % delta.dim()]
                delta = delta - delta.mean(dim=dims, keepdim=True)
            expected[group] = float(delta.square().mean()) / float(layer.output_mean_square)
        assert torch.allclose(errors[name], expected, rtol=1e-9, atol=1e-15), name
        assert expected.max() > 0, name


def test_greedy_errors_measured_inside_one_forward_equal_errors_on_captured_inputs(converted, images):
    """The streaming measurement (one layer's input alive at a time) is the per-layer formula applied
    to what each layer receives in the INT8 model."""
    from flexiq_search.quant.convert import capture_layer_inputs, mixed_layers
    from flexiq_search.selection.greedy_error import _relative_errors, layer_output_errors

    int8 = copy.deepcopy(converted)
    for layer in mixed_layers(int8).values():
        layer.boundary = 0
    inputs = capture_layer_inputs(int8, images)
    expected = {name: _relative_errors(layer, inputs[name]) for name, layer in mixed_layers(int8, eligible_only=True).items()}
    got = layer_output_errors(converted, images)
    assert list(got) == list(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
