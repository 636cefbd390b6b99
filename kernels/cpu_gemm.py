"""The integer CPU path of FlexiQ's mixed GEMM: int8 x int8 on torch's int8 matmul, int32 accumulation.

    acc[m, o] = sum over 8-bit columns of a * w
              + sum over 4-bit groups g of 2^(s_a[g]) * (a4 . (2^(s_w[o, g]) w4))

The 8-bit columns run as one `torch._int_mm` (VNNI int8 GEMM on x86). The 4-bit columns run as
one int8 GEMM per distinct activation shift: the 4-bit activation codes a4 (in [-8, 7] or [0, 15])
against weights pre-shifted offline (2^s_w q4 lies in [-128, 112], an int8), the product then
shifted by s_a. Unsigned activations ([0, 255], no int8) are offset by -128 and corrected with
128 x the weight row sums. x86 has no instruction that makes 4-bit products faster than int8 ones,
so the 4-bit columns cost what int8 columns cost (plus the extraction): this path is exact, not a
speed-up. Inputs are plain tensors; the formula is checked against flexiq_search.quant.arithmetic
(the project's single definition) in tests, never imported from it (kernels stay standalone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOW_BITS = 4


def extract_low(codes: torch.Tensor, shift, signed: bool) -> torch.Tensor:
    """4-bit codes clip(round_half_up(codes / 2^shift)) by add-and-shift; `shift` an int or a
    tensor broadcast over `codes` (int32 in and out)."""
    lo, hi = (-(1 << (LOW_BITS - 1)), (1 << (LOW_BITS - 1)) - 1) if signed else (0, (1 << LOW_BITS) - 1)
    half = (1 << shift) >> 1
    return ((codes + half) >> shift).clamp(lo, hi)


@dataclass
class PackedWeights:
    """Weights of one layer at one boundary, split and pre-shifted offline (once per ratio level)."""

    high_columns: torch.Tensor  # [K8] column indices of the 8-bit part
    high: torch.Tensor  # [K8, O] int8, transposed for the GEMM
    high_row_sums: torch.Tensor  # [O] int32: sum of the 8-bit weights (unsigned activation correction)
    low_columns: dict[int, torch.Tensor]  # activation shift -> [K4s] column indices
    low: dict[int, torch.Tensor]  # activation shift -> [K4s, O] int8 weights 2^s_w q4


def pack_weights(weight_codes: torch.Tensor, column_group: torch.Tensor, low_groups: torch.Tensor,
                 act_shift: torch.Tensor, weight_shift: torch.Tensor) -> PackedWeights:
    """weight_codes [O, K] int8, column_group [K], low_groups [G] bool, act_shift [G], weight_shift [O, G]."""
    weights = weight_codes.to(torch.int32)
    low_column = low_groups[column_group]
    high_columns = (~low_column).nonzero().flatten()
    high = weights[:, high_columns]
    low_columns, low = {}, {}
    column_act_shift = act_shift.to(torch.int64)[column_group]
    for shift in torch.unique(column_act_shift[low_column]).tolist():
        columns = (low_column & (column_act_shift == shift)).nonzero().flatten()
        w_shift = weight_shift.to(torch.int32)[:, column_group[columns]]  # [O, K4s]
        q4 = extract_low(weights[:, columns], w_shift, signed=True)
        low_columns[int(shift)] = columns
        low[int(shift)] = _gemm_operand((q4 << w_shift).t())
    return PackedWeights(high_columns, _gemm_operand(high.t()), high.sum(dim=1, dtype=torch.int32), low_columns, low)


def _gemm_operand(matrix: torch.Tensor) -> torch.Tensor:
    """An int8 copy with row-major strides. `.contiguous()` is not enough: a [1, N] tensor keeps a
    stride of (1, 1), which torch 2.14's CPU `_int_mm` misreads (wrong results; see the tests)."""
    return torch.empty(matrix.shape, dtype=torch.int8).copy_(matrix)


def mixed_gemm(act_codes: torch.Tensor, packed: PackedWeights, act_signed: bool) -> torch.Tensor:
    """[M, O] int32 accumulator from INT8 activation codes [M, K] (int16/int32 tensor)."""
    high = act_codes[:, packed.high_columns].to(torch.int32)
    if not act_signed:
        high = high - 128
    acc = torch._int_mm(high.to(torch.int8), packed.high)
    if not act_signed:
        acc += 128 * packed.high_row_sums
    for shift, columns in packed.low_columns.items():
        a4 = extract_low(act_codes[:, columns].to(torch.int32), shift, act_signed).to(torch.int8)
        acc += torch._int_mm(a4, packed.low[shift]) << shift
    return acc
