"""The integer CPU GEMM equals the project's int64 reference formula bit for bit."""

import numpy as np
import pytest
import torch

from flexiq_search.quant.arithmetic import extraction_shift, mixed_accumulator
from kernels.cpu_gemm import mixed_gemm, pack_weights


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


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("m, k, o, group_size", [(37, 72, 16, 8), (5, 30, 7, 4), (64, 256, 33, 1)])
def test_mixed_gemm_is_bit_exact(m, k, o, group_size, signed):
    rng = np.random.default_rng(m + k + o)
    act, weight, column_group, act_shift, weight_shift = random_layer(rng, m, k, o, group_size, signed)
    groups = len(act_shift)
    for share in (0.0, 0.3, 0.7, 1.0):
        low = rng.permutation(groups) < round(share * groups)
        packed = pack_weights(torch.tensor(weight, dtype=torch.int8), torch.tensor(column_group),
                              torch.tensor(low), torch.tensor(act_shift), torch.tensor(weight_shift))
        ours = mixed_gemm(torch.tensor(act, dtype=torch.int32), packed, signed)
        expected = mixed_accumulator(act, weight, np.arange(k), act_shift, weight_shift, low, group_size, signed)
        assert ours.dtype == torch.int32
        assert np.array_equal(ours.numpy().astype(np.int64), expected), share


def test_single_row_weight_operand_is_safe():
    """torch's CPU _int_mm misreads a [1, N] operand whose stride is (1, 1) (what .t().contiguous()
    leaves); packing must hand it row-major strides. Found when one 4-bit column had its own shift."""
    a = torch.randint(0, 15, (64, 1), dtype=torch.int8)
    w = torch.randint(-8, 8, (33, 1), dtype=torch.int8)  # 4-bit already: shift 0 keeps it
    packed = pack_weights(w, torch.tensor([0]), torch.tensor([True]), torch.tensor([0]), torch.zeros(33, 1, dtype=torch.int64))
    assert torch.equal(mixed_gemm(a.to(torch.int32), packed, act_signed=False), a.int() @ w.int().t())
