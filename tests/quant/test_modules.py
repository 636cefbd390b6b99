"""Mixed-precision layers: the fake-quant forward equals the int64 reference formula exactly."""

import numpy as np
import pytest
import torch
from torch import nn

from flexiq_search.config import QuantConfig
from flexiq_search.quant.arithmetic import im2col, mixed_accumulator
from flexiq_search.quant.convert import convert_model, is_depthwise, mac_share_4bit, mixed_layers, set_ratio
from flexiq_search.quant.modules import MixedPrecisionConv2d
from flexiq_search.selection import apply_selection, create_strategy


def reference_accumulator(layer, x: torch.Tensor, act_shift: np.ndarray | None = None) -> np.ndarray:
    """int64 accumulator of `layer` on input `x` through the literal formula of method.md."""
    codes = layer.quantize_input(x).numpy().astype(np.int64)
    low = layer.low_bit_groups().numpy()
    weight = layer.weight_codes.numpy().astype(np.int64)
    act_shift = layer.act_shift.numpy().astype(np.int64) if act_shift is None else act_shift
    weight_shift = layer.weight_shift.numpy().astype(np.int64)
    signed = bool(layer.act_signed)
    if isinstance(layer, MixedPrecisionConv2d):
        if layer.dynamic_same_padding:
            from timm.layers.padding import pad_same

            codes = pad_same(torch.from_numpy(codes), list(layer.kernel_size), list(layer.stride),
                             list(layer.dilation)).numpy()
        n, c = codes.shape[:2]
        out_ch, cpg = weight.shape[:2]
        groups = layer.groups
        opg = out_ch // groups
        kk = layer.kernel_size[0] * layer.kernel_size[1]
        outs = []
        for g in range(groups):
            cols = im2col(codes[:, g * cpg:(g + 1) * cpg], layer.kernel_size, layer.stride, layer.padding, layer.dilation)
            column_channel = g * cpg + np.arange(cpg * kk) // kk
            rows = slice(g * opg, (g + 1) * opg)
            outs.append(mixed_accumulator(cols, weight[rows].reshape(opg, -1), column_channel, act_shift,
                                          weight_shift[rows], low, layer.group_size, signed))
        acc = np.concatenate(outs, axis=1)
        out_h = (codes.shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1) // layer.stride[0] + 1
        return acc.reshape(n, out_h, -1, out_ch).transpose(0, 3, 1, 2)
    flat = codes.reshape(-1, codes.shape[-1])
    acc = mixed_accumulator(flat, weight, np.arange(weight.shape[1]), act_shift, weight_shift, low,
                            layer.group_size, signed)
    return acc.reshape(*codes.shape[:-1], weight.shape[0])


def convert_single(layer: nn.Module, inputs: torch.Tensor, group_size=4, **config):
    config = QuantConfig(group_size=group_size, keep_first_int8=False, keep_last_int8=False, **config)
    model = convert_model(nn.Sequential(layer), [inputs], config)
    return model, model[0]


def random_selection(layer, rng):
    """A random channel order; levels 0.25 / 0.5 / 1.0 lower a quarter, half and all groups."""
    order = rng.permutation(layer.n_groups).tolist()
    n = layer.n_groups
    layer.apply_selection(order, [max(1, n // 4), max(1, n // 2), n], [0.25, 0.5, 1.0])


LAYERS = {
    "conv3x3-stride2": lambda: nn.Conv2d(12, 10, 3, stride=2, padding=1),
    "conv-dilated-rect": lambda: nn.Conv2d(9, 6, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    "depthwise": lambda: nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),
    "grouped": lambda: nn.Conv2d(12, 8, 1, groups=4),
    "linear": lambda: nn.Linear(20, 7),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("unsigned", [False, True])
def test_fake_quant_equals_reference_at_every_boundary(name, unsigned):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = LAYERS[name]()
    shape = (3, 5, 20) if name == "linear" else (2, layer.in_channels, 9, 8)
    x = torch.randn(shape) * torch.rand(shape[-1] if name == "linear" else shape[1]).view(
        *([-1] if name == "linear" else [-1, 1, 1])) * 3
    if unsigned:
        x = x.relu()
    _, mixed = convert_single(layer, x)
    assert bool(mixed.act_signed) is (not unsigned)
    for trial in range(4):
        random_selection(mixed, rng)
        for ratio in (0, 0.25, 0.5, 1.0):
            mixed.set_ratio(ratio)
            acc = mixed.integer_accumulator(x)
            expected = reference_accumulator(mixed, x)
            assert acc.shape == expected.shape
            assert (acc.double().numpy() == expected).all(), (name, trial, ratio)
            y = mixed(x)
            scale = mixed._view_channels(mixed.act_scale * mixed.weight_scale, y.dim())
            bias = 0 if mixed.bias is None else mixed._view_channels(mixed.bias, y.dim())
            assert torch.equal(y, torch.from_numpy(expected).float() * scale + bias)


def dynamic_shift_of_sample(layer, sample: torch.Tensor) -> np.ndarray:
    """[G] shifts from one sample's largest code per group, derived with NumPy from arithmetic.py."""
    from flexiq_search.quant.arithmetic import extraction_shift

    codes = np.abs(layer.quantize_input(sample).numpy().astype(np.int64))
    channel_axis = 1 if isinstance(layer, MixedPrecisionConv2d) else codes.ndim - 1
    per_channel = np.moveaxis(codes, channel_axis, -1).reshape(-1, layer.in_channels).max(axis=0)
    padded = np.zeros(layer.n_groups * layer.group_size, dtype=np.int64)
    padded[:layer.in_channels] = per_channel
    return extraction_shift(padded.reshape(layer.n_groups, -1).max(axis=1), bool(layer.act_signed))


@pytest.mark.parametrize("name", list(LAYERS))
def test_dynamic_extraction_is_exact_per_sample(name):
    """Dynamic shifts: each sample's accumulator equals the reference with that sample's own shifts."""
    torch.manual_seed(2)
    layer = LAYERS[name]()
    shape = (3, 4, 20) if name == "linear" else (3, layer.in_channels, 7, 6)
    x = torch.randn(shape) * torch.tensor([0.2, 1.0, 4.0]).view(-1, *[1] * (len(shape) - 1))  # quiet to loud samples
    _, mixed = convert_single(layer, x, activation_shift="dynamic")
    random_selection(mixed, np.random.default_rng(1))
    mixed.set_ratio(0.5)
    acc = mixed.integer_accumulator(x).double().numpy()
    shifts = [dynamic_shift_of_sample(mixed, x[i:i + 1]) for i in range(3)]
    for i in range(3):
        assert (acc[i:i + 1] == reference_accumulator(mixed, x[i:i + 1], shifts[i])).all(), i
    assert shifts[0].sum() < shifts[2].sum(), "a quiet sample keeps more low bits"


def test_large_layers_fall_back_to_float64_and_stay_exact():
    torch.manual_seed(1)
    layer = nn.Conv2d(512, 4, 3, padding=1)
    nn.init.uniform_(layer.weight, -1, 1)
    x = torch.rand(1, 512, 6, 6) * 4  # unsigned, near-uniform codes: large partial sums
    _, mixed = convert_single(layer, x, group_size=8)
    assert mixed.accumulator_bound() >= 1 << 24 and not bool(mixed.exact_float32)
    random_selection(mixed, np.random.default_rng(3))
    mixed.set_ratio(0.5)
    assert (mixed.integer_accumulator(x).numpy() == reference_accumulator(mixed, x)).all()


def test_float32_is_chosen_only_below_the_exact_bound():
    torch.manual_seed(2)
    layer = nn.Conv2d(64, 8, 3, padding=1)
    x = torch.rand(2, 64, 8, 8)
    _, mixed = convert_single(layer, x)
    assert bool(mixed.exact_float32) == (mixed.accumulator_bound() < 1 << 24)
    assert bool(mixed.exact_float32)
    assert (mixed.integer_accumulator(x).numpy() == reference_accumulator(mixed, x)).all()


def test_timm_same_padding_conv_is_exact():
    from timm.layers import Conv2dSame

    torch.manual_seed(3)
    layer = Conv2dSame(6, 8, 3, stride=2)
    x = torch.randn(2, 6, 11, 10)
    _, mixed = convert_single(layer, x, group_size=2)
    assert mixed.dynamic_same_padding
    random_selection(mixed, np.random.default_rng(4))
    mixed.set_ratio(1.0)
    assert (mixed.integer_accumulator(x).numpy() == reference_accumulator(mixed, x)).all()
    mixed.set_ratio(0)
    with torch.no_grad():
        assert torch.allclose(mixed(x), layer(x), atol=0.05 * float(layer(x).abs().max()))


@pytest.fixture(scope="module")
def converted(trained_resnet20, digits_batches):
    model = convert_model(trained_resnet20, digits_batches)
    selection = create_strategy("range").select(model, [0.25, 0.5, 0.75, 1.0])
    apply_selection(model, selection)
    return model


def test_ratio_zero_equals_plain_int8_bit_for_bit(converted, trained_resnet20, digits_batches):
    plain = convert_model(trained_resnet20, digits_batches)  # no selection installed: pure INT8
    x = digits_batches[0]
    set_ratio(converted, 0.75)
    converted(x)
    set_ratio(converted, 0)
    assert torch.equal(converted(x), plain(x))


def test_set_ratio_leaves_stored_weights_untouched(converted, digits_batches):
    before = {k: v.clone() for k, v in converted.state_dict().items()}
    for ratio in (0.25, 1.0, 0.5, 0):
        set_ratio(converted, ratio)
        converted(digits_batches[0])
    after = converted.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    weights = [layer.weight_codes for layer in mixed_layers(converted).values()]
    assert all(w.dtype == torch.int8 for w in weights)
    assert not any(isinstance(p, torch.Tensor) and p.is_floating_point() and p.dim() > 1
                   for p in converted.state_dict().values()), "no float copy of weights is stored"


def test_ratio_one_lowers_every_eligible_group_and_nothing_else(converted):
    set_ratio(converted, 1.0)
    for name, layer in mixed_layers(converted).items():
        assert bool(layer.low_bit_groups().all()) is layer.eligible, name
    assert mac_share_4bit(converted) == 1.0
    layers = list(mixed_layers(converted))
    assert not mixed_layers(converted)[layers[0]].eligible and not mixed_layers(converted)[layers[-1]].eligible


def test_levels_are_nested_and_on_target(converted):
    previous = {name: set() for name in mixed_layers(converted, eligible_only=True)}
    for ratio in (0.25, 0.5, 0.75, 1.0):
        set_ratio(converted, ratio)
        share = mac_share_4bit(converted)
        largest_group = max(float(l.group_macs().max()) for l in mixed_layers(converted, eligible_only=True).values())
        total = sum(float(l.group_macs().sum()) for l in mixed_layers(converted, eligible_only=True).values())
        assert abs(share - ratio) <= largest_group / total
        for name, layer in mixed_layers(converted, eligible_only=True).items():
            now = set(torch.nonzero(layer.low_bit_groups()).flatten().tolist())
            assert previous[name] <= now
            previous[name] = now


def test_unknown_ratio_is_refused(converted):
    with pytest.raises(ValueError, match="not a stored level"):
        set_ratio(converted, 0.3)
    with pytest.raises(ValueError, match="outside|in \\[0, 1\\]"):
        set_ratio(converted, 1.5)


@pytest.mark.parametrize("keep", [True, False])
def test_depthwise_convs_stay_int8_only_when_asked(keep):
    """keep_depthwise_int8: depthwise convs are ineligible (never 4-bit, outside the MAC budget);
    the grouped-but-not-depthwise conv and the dense convs stay eligible either way."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),  # grouped, not depthwise
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    images = torch.randn(8, 3, 8, 8)
    qmodel = convert_model(model, [images], QuantConfig(group_size=1, keep_depthwise_int8=keep))
    layers = mixed_layers(qmodel)
    assert [is_depthwise(model.get_submodule(name)) for name in layers] == [False, True, False, False, False]
    assert layers["2"].eligible is (not keep) and layers["4"].eligible and layers["6"].eligible
    apply_selection(qmodel, create_strategy("range").select(qmodel, [0.5, 1.0], images))
    set_ratio(qmodel, 1.0)
    assert bool(layers["2"].low_bit_groups().any()) is (not keep)
    assert mac_share_4bit(qmodel) == 1.0
