"""Bias correction: every level adds a per-output offset that cancels the mean output shift its
4-bit groups cause on the calibration images; the offsets travel with the model (export, runtime)."""

import pytest
import torch

from flexiq_search.config import QuantConfig
from flexiq_search.quant.convert import capture_layer_inputs, convert_model, mixed_layers, set_ratio
from flexiq_search.selection import apply_selection, create_strategy

LEVELS = [0.25, 0.5, 1.0]


@pytest.fixture(scope="module")
def corrected(trained_resnet20, digits_batches):
    model = convert_model(trained_resnet20, digits_batches, QuantConfig(bias_correction=True, group_size=4))
    apply_selection(model, create_strategy("range").select(model, LEVELS))
    return model


def output_shift(layer, x, low=None, ratio=None):
    """Mean output change per output channel of running 4-bit (a level or a group mask) vs INT8."""
    layer.set_ratio(0)
    int8 = layer(x)
    layer.set_low_bit_groups(low) if low is not None else layer.set_ratio(ratio)
    lowered = layer(x)
    offset = layer.bias_offset
    layer.set_ratio(0)
    dims = [d for d in range(x.dim()) if d != layer.channel_dim % x.dim()]
    return (lowered - int8).double().mean(dim=dims), offset


def test_offsets_cancel_the_mean_shift_of_any_group_set_on_the_calibration_images(corrected, digits_batches):
    set_ratio(corrected, 0)
    inputs = capture_layer_inputs(corrected, torch.cat(digits_batches))
    generator = torch.Generator().manual_seed(0)
    uncorrected = []
    for name, layer in mixed_layers(corrected, eligible_only=True).items():
        x = inputs[name]
        cases = [{"ratio": r} for r in LEVELS] + [{"low": torch.rand(layer.n_groups, generator=generator) < 0.5}]
        for case in cases:
            shift, offset = output_shift(layer, x, **case)
            if offset is None:
                continue
            scale = float((layer.act_scale * layer.weight_scale).max())
            assert shift.abs().max() < 1e-4 * scale + 1e-6, (name, case)  # corrected: no mean shift left
            uncorrected.append(float((shift - offset.double()).abs().max()) / scale)
    assert max(uncorrected) > 0.05, "lowering shifts the mean: the correction has something to cancel"


def test_corrected_levels_are_exported_and_served_identically(corrected, digits_batches, tmp_path):
    from flexiq_search.runtime.export import export_model
    from flexiq_search.runtime.runtime import FlexiqRuntime
    from flexiq_search.selection.base import record_shifts

    selection = record_shifts(corrected, create_strategy("range").select(corrected, LEVELS))
    apply_selection(corrected, selection)
    path = tmp_path / "r20.flexiq"
    export_model(path, corrected, model_name="resnet20", model_kwargs={"num_classes": 10, "in_chans": 1},
                 input_shape=[1, 1, 8, 8], quant=QuantConfig(bias_correction=True, group_size=4),
                 selection=selection, accuracy={0.0: 1.0, 0.25: 1.0, 0.5: 1.0, 1.0: 1.0}, provenance={})
    runtime = FlexiqRuntime.load(path)
    images = digits_batches[1][:16]
    with torch.no_grad():
        for ratio in runtime.levels:
            set_ratio(corrected, ratio)
            runtime.set_ratio(ratio)
            assert torch.equal(runtime(images), corrected(images)), ratio
        set_ratio(corrected, 0.5)
        with_offsets = corrected(images)
        for layer in mixed_layers(corrected).values():
            layer.bias_offset = None
        assert not torch.equal(corrected(images), with_offsets)  # the offsets are in what was compared
    set_ratio(corrected, 0)


def test_old_quant_configs_load_without_bias_correction():
    from flexiq_search.config import config_from_dict

    old = {"_type": "QuantConfig", "_version": 2, "_data": {"group_size": 8, "activation_shift": "dynamic"}}
    assert config_from_dict(old).bias_correction is False


@pytest.mark.parametrize("activation_shift", ["static", "dynamic"])
def test_offsets_are_exact_for_depthwise_grouped_strided_and_same_padded_convs(activation_shift, sample_photos):
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        Conv2dSame(16, 16, 3, stride=2, groups=16), torch.nn.ReLU(),  # depthwise, TF "SAME" padding
        torch.nn.Conv2d(16, 32, 5, padding=2, groups=16, stride=2), torch.nn.ReLU(),  # channel multiplier 2
        torch.nn.Conv2d(32, 24, 1, groups=2), torch.nn.Hardswish(),  # grouped
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 5)).eval()
    model = convert_model(net, [sample_photos], QuantConfig(group_size=1, activation_shift=activation_shift,
                                                             bias_correction=True, keep_first_int8=False))
    inputs = capture_layer_inputs(model, sample_photos)
    generator = torch.Generator().manual_seed(1)
    for name, layer in mixed_layers(model, eligible_only=True).items():
        shift, offset = output_shift(layer, inputs[name], low=torch.rand(layer.n_groups, generator=generator) < 0.5)
        scale = float((layer.act_scale * layer.weight_scale).max())
        assert shift.abs().max() < 1e-4 * scale + 1e-6, name
        assert (shift - offset.double()).abs().max() > 0, name


def test_a_uniform_int4_selection_leaves_nothing_behind_for_the_next_one(trained_resnet20, digits_batches):
    """Uniform INT4 installs naive shifts; a strategy run later on the same model must score, record
    and correct with the calibrated shifts, exactly as on a fresh model (a benchmark once reused one
    converted model per fold and every row after uniform INT4 silently ran naive extraction)."""
    quant = QuantConfig(bias_correction=True, group_size=4, activation_shift="dynamic")
    fresh = convert_model(trained_resnet20, digits_batches, quant)
    reused = convert_model(trained_resnet20, digits_batches, quant)
    images = torch.cat(digits_batches)[:64]

    uniform = create_strategy("uniform-int4").select(reused, LEVELS)
    apply_selection(reused, uniform)
    layers = mixed_layers(reused, eligible_only=True).values()
    assert all(layer.extraction == "naive" for layer in layers)
    assert all(layer.level_bias.numel() == 0 for layer in layers), "offsets measured for other shifts"

    expected = create_strategy("greedy-error").select(fresh, LEVELS, images)
    again = create_strategy("greedy-error").select(reused, LEVELS, images)
    assert again.extraction == "shift" and again.layers == expected.layers
    apply_selection(fresh, expected)
    apply_selection(reused, again)
    with torch.no_grad():
        for ratio in LEVELS:
            set_ratio(fresh, ratio)
            set_ratio(reused, ratio)
            assert torch.equal(fresh(images), reused(images)), ratio
    set_ratio(reused, 1.0)
    assert all(layer.bias_offset is not None for layer in mixed_layers(reused, eligible_only=True).values())
