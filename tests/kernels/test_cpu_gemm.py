"""The integer CPU GEMM equals the project's int64 reference formula bit for bit."""

import numpy as np
import pytest
import torch

from flexiq_search.quant.arithmetic import extraction_shift, mixed_accumulator
from kernels.cpu_gemm import (EIGHT_BIT, activation_operand, depthwise_conv, gemm_operands, grouped_gemm, im2col_operand, mixed_gemm,
                              output_size, pack_weights, padded_operand, tap_major)


def random_layer(rng, m, k, o, group_size, signed):
    lo, hi = (-127, 127) if signed else (0, 255)
    # Channels with different ranges, so that shifts differ between groups.
    ranges = rng.choice([3, 15, 40, 127 if signed else 255], size=k)
    act = np.clip(rng.integers(-ranges, ranges + 1, size=(m, k)), lo, hi)
    weight = rng.integers(-127, 128, size=(o, k)) // rng.choice([1, 4, 16], size=(o, 1))
    groups = -(-k // group_size)
    column_group = np.arange(k) // group_size
    group_max = np.zeros(groups, dtype=np.int64)
    np.maximum.at(group_max, column_group, np.abs(act).max(axis=0))
    act_shift = extraction_shift(group_max, signed)
    weight_group_max = np.zeros((o, groups), dtype=np.int64)
    for g in range(groups):
        weight_group_max[:, g] = np.abs(weight[:, column_group == g]).max(axis=1)
    weight_shift = extraction_shift(weight_group_max, True)
    return act, weight, column_group, act_shift, weight_shift


def column_shifts(low, column_group, act_shift, weight_shift):
    """The kernels' per-column shift maps (-1 = INT8) from per-group shifts and a 4-bit group mask."""
    low_column = low[column_group]
    act = np.where(low_column, act_shift[column_group], EIGHT_BIT)[None, :]
    weight = np.where(low_column[None, :], weight_shift[:, column_group], EIGHT_BIT)
    return torch.tensor(act, dtype=torch.int8), torch.tensor(weight, dtype=torch.int8)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("m, k, o, group_size", [(37, 72, 16, 8), (5, 30, 7, 4), (64, 256, 33, 1), (1, 16, 1, 8)])
def test_mixed_gemm_is_bit_exact(m, k, o, group_size, signed):
    rng = np.random.default_rng(m + k + o)
    act, weight, column_group, act_shift, weight_shift = random_layer(rng, m, k, o, group_size, signed)
    groups = len(act_shift)
    codes = torch.tensor(act, dtype=torch.int8 if signed else torch.uint8)
    for share in (0.0, 0.3, 0.7, 1.0):
        low = rng.permutation(groups) < round(share * groups)
        a_shift, w_shift = column_shifts(low, column_group, act_shift, weight_shift)
        packed = pack_weights(torch.tensor(weight, dtype=torch.int8), w_shift)
        ours = mixed_gemm(codes, a_shift, packed, signed)
        expected = mixed_accumulator(act, weight, np.arange(k), act_shift, weight_shift, low, group_size, signed)
        assert ours.dtype == torch.int32
        assert np.array_equal(ours.numpy().astype(np.int64), expected), share


@pytest.mark.parametrize("signed", [True, False])
def test_per_sample_shift_rows(signed):
    """Dynamic extraction: each block of rows (one sample's im2col rows) has its own shifts."""
    rng = np.random.default_rng(7)
    act, weight, column_group, act_shift, weight_shift = random_layer(rng, 12, 24, 5, 4, signed)
    low = np.array([True, False, True, True, False, True])
    sample_shifts = np.stack([act_shift, np.clip(act_shift - 1, 0, None), np.clip(act_shift - 3, 0, None)])  # 3 x 4 rows
    packed = pack_weights(torch.tensor(weight, dtype=torch.int8), column_shifts(low, column_group, act_shift, weight_shift)[1])
    a_shift = torch.tensor(np.where(low[column_group], sample_shifts[:, column_group], EIGHT_BIT), dtype=torch.int8)
    ours = mixed_gemm(torch.tensor(act, dtype=torch.int8 if signed else torch.uint8), a_shift, packed, signed)
    for sample in range(3):
        rows = slice(4 * sample, 4 * sample + 4)
        expected = mixed_accumulator(act[rows], weight, np.arange(24), sample_shifts[sample], weight_shift, low, 4, signed)
        assert np.array_equal(ours[rows].numpy(), expected)


@pytest.mark.parametrize("signed", [True, False])
def test_grouped_gemm_matches_per_group_reference(signed):
    """Depthwise (Kg = 9 taps, one output per group) and grouped layouts, against the reference per group."""
    rng = np.random.default_rng(3)
    for groups, k_per_group, out_per_group in ((6, 9, 1), (3, 8, 2)):
        act, weight, column_group, act_shift, weight_shift = random_layer(
            rng, 20, groups * k_per_group, groups * out_per_group, 4, signed)
        weight = weight[:, :k_per_group]  # [O, Kg]: output o reads its own group's columns
        low = rng.permutation(len(act_shift)) < len(act_shift) // 2
        a_shift = torch.tensor(np.where(low[column_group], act_shift[column_group], EIGHT_BIT)[None, :], dtype=torch.int8)
        w_shift = np.full(weight.shape, EIGHT_BIT)
        for o in range(weight.shape[0]):
            cols = np.arange(k_per_group) + (o // out_per_group) * k_per_group
            w_shift[o] = np.where(low[column_group[cols]], weight_shift[o, column_group[cols]], EIGHT_BIT)
        packed = pack_weights(torch.tensor(weight, dtype=torch.int8), torch.tensor(w_shift, dtype=torch.int8))
        operand = activation_operand(torch.tensor(act, dtype=torch.int8 if signed else torch.uint8), a_shift, signed)
        ours = grouped_gemm(operand, packed, groups, 1, signed).numpy()
        for o in range(weight.shape[0]):
            cols = np.arange(k_per_group) + (o // out_per_group) * k_per_group
            full = np.zeros((1, act.shape[1]), dtype=np.int64)
            full[0, cols] = weight[o]
            shift_row = np.zeros((1, len(act_shift)), dtype=np.int64)
            shift_row[0] = weight_shift[o]
            expected = mixed_accumulator(act, full, np.arange(act.shape[1]), act_shift, shift_row, low, 4, signed)
            assert np.array_equal(ours[:, o], expected[:, 0]), (groups, o)


def test_single_row_operands_are_safe():
    """torch's CPU _int_mm misreads a [1, N] operand whose stride is (1, 1) (what .t().contiguous()
    leaves); packing must hand it row-major strides. Found when one 4-bit column had its own shift."""
    a = torch.randint(0, 15, (64, 1), dtype=torch.uint8)
    w = torch.randint(-8, 8, (33, 1), dtype=torch.int8)
    packed = pack_weights(w, torch.full((33, 1), EIGHT_BIT, dtype=torch.int8))
    assert packed.matrix.stride() == (33, 1)
    ours = mixed_gemm(a, torch.full((1, 1), EIGHT_BIT, dtype=torch.int8), packed, signed=False)
    assert torch.equal(ours, a.int() @ w.int().t())


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("stride, padding, dilation", [((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 0), (1, 1)),
                                                       ((1, 2), (2, 2), (2, 1))])
def test_conv_operands_match_torch_conv(signed, stride, padding, dilation):
    """Padded NHWC operand + tap-major im2col (dense) and the direct depthwise kernel, INT8 columns
    only, against torch's float64 convolution of the same codes (exact at these magnitudes)."""
    rng = np.random.default_rng(11)
    codes = torch.tensor(rng.integers(-128 if signed else 0, 128 if signed else 256, (2, 6, 9, 7)), dtype=torch.int32)
    eight_bit = torch.full((1, 6), EIGHT_BIT, dtype=torch.int8)
    padded = padded_operand(codes, padding, eight_bit, signed)
    geometry = ((3, 3), stride, dilation)
    out_h, out_w = output_size(padded, *geometry)
    for groups in (1, 6):
        weight = torch.tensor(rng.integers(-127, 128, (6, 6 // groups, 3, 3)), dtype=torch.int8)
        packed = pack_weights(tap_major(weight), torch.full((6, 9 * 6 // groups), EIGHT_BIT, dtype=torch.int8))
        if groups == 1:
            ours = gemm_operands(im2col_operand(padded, *geometry), packed, signed)
        else:
            ours = depthwise_conv(padded, packed, *geometry, signed)
        expected = torch.nn.functional.conv2d(codes.double(), weight.double(), None, stride, padding, dilation, groups)
        assert torch.equal(ours.view(2, out_h * out_w, 6).transpose(1, 2).reshape(expected.shape).double(), expected)

