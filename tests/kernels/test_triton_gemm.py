"""The Triton mixed GEMM equals the project's int64 reference, run under Triton's CPU interpreter."""

import os

import numpy as np
import pytest
import torch

from flexiq_search.quant.arithmetic import mixed_accumulator

from .test_cpu_gemm import random_layer

triton_gemm = pytest.importorskip("kernels.triton_gemm", reason="triton is not installed")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="needs CUDA or TRITON_INTERPRET=1 (set in tests/conftest.py)")


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("m, k, n, group_size", [(37, 72, 20, 8), (5, 30, 7, 4), (40, 100, 33, 1)])
def test_triton_mixed_gemm_is_bit_exact(m, k, n, group_size, signed):
    rng = np.random.default_rng(m * k + n)
    act, weight, column_group, act_shift, weight_shift = random_layer(rng, m, k, n, group_size, signed)
    groups = len(act_shift)
    codes = torch.tensor(act, dtype=torch.int8 if signed else torch.uint8)
    for share in (0.0, 0.4, 1.0):
        low = rng.permutation(groups) < round(share * groups)
        packed = triton_gemm.pack_weights(torch.tensor(weight, dtype=torch.int8), torch.tensor(column_group),
                                          torch.tensor(low), torch.tensor(act_shift), torch.tensor(weight_shift))
        ours = triton_gemm.mixed_gemm(codes, packed, signed, block_m=16, block_n=16)
        expected = mixed_accumulator(act, weight, np.arange(k), act_shift, weight_shift, low, group_size, signed)
        assert ours.dtype == torch.int32
        assert np.array_equal(ours.numpy().astype(np.int64), expected), share


def test_four_bit_weights_take_half_the_bytes():
    rng = np.random.default_rng(0)
    act, weight, column_group, act_shift, weight_shift = random_layer(rng, 4, 256, 64, 8, True)
    packed = triton_gemm.pack_weights(torch.tensor(weight, dtype=torch.int8), torch.tensor(column_group),
                                      torch.ones(32, dtype=torch.bool), torch.tensor(act_shift), torch.tensor(weight_shift))
    assert packed.high.numel() == 0 and packed.low_nibbles.numel() == 256 * 64 // 2
