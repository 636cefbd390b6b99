"""FlexiQ's mixed GEMM as a Triton kernel, for CUDA machines.

K (the reduction) has an 8-bit part and a 4-bit part. The 8-bit part is a plain int8 x int8 GEMM.
In the 4-bit part, the weights are stored as 4-bit codes q4_w, two per byte (half the bytes of
INT8: the saving a memory-bound GEMM sees), with one weight shift per (output, channel group); the
activations arrive as INT8 codes and the kernel extracts their 4-bit codes q4_a itself, with the
group's activation shift, as FlexiQ's runtime does. The group product

    2^(s_a + s_w) * (q4_a . q4_w) = (2^s_a q4_a) . (2^s_w q4_w)

is computed as the right-hand side: both lowered operands lie on the INT8 grid, so the tensor
cores' int8 dot with int32 accumulation gives it exactly, without a per-group shift of the partial
sums (groups of 8 are narrower than a tensor-core K step). Unsigned activations ([0, 255]) are
offset by -128 into int8 and corrected with 128 x the weight column sums.

Activation shifts are static (per group, from calibration); per-sample dynamic shifts are not
implemented here. Correctness is tested under Triton's interpreter (TRITON_INTERPRET=1, CPU
tensors); timing needs CUDA. Import this module only where triton is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOW_BITS = 4
BLOCK_K = 32  # the 4-bit part runs in steps of 2 x 16 columns (even and odd nibbles), tl.dot's minimum K


@dataclass
class TritonPackedWeights:
    """One layer's weights at one ratio level, laid out for `mixed_gemm`."""

    high_columns: torch.Tensor  # [K8] activation columns of the 8-bit part
    low_columns: torch.Tensor  # [K4] activation columns of the 4-bit part, grouped by channel group
    high: torch.Tensor  # [K8, N] int8
    low_nibbles: torch.Tensor  # [K4p / 2, N] uint8: column 2i in the low nibble, 2i + 1 in the high one
    low_column_group: torch.Tensor  # [K4p] int32: index of each 4-bit column's group in the shift tables
    weight_shift: torch.Tensor  # [G4, N] int32
    act_shift: torch.Tensor  # [G4] int32
    column_sums: torch.Tensor  # [N] int32 of the effective (lowered) weights: the unsigned correction


def pack_weights(weight_codes: torch.Tensor, column_group: torch.Tensor, low_groups: torch.Tensor,
                 act_shift: torch.Tensor, weight_shift: torch.Tensor) -> TritonPackedWeights:
    """weight_codes [N, K] int8, column_group [K] (channel group of each column), low_groups [G] bool,
    act_shift [G], weight_shift [N, G]: static shifts of method.md."""
    codes = weight_codes.to(torch.int32)
    low_column = low_groups[column_group]
    high_columns = (~low_column).nonzero().flatten()
    low_columns = low_column.nonzero().flatten()
    low_columns = low_columns[torch.argsort(column_group[low_columns], stable=True)]
    group_ids = torch.unique(column_group[low_columns])  # sorted
    table_index = torch.searchsorted(group_ids, column_group[low_columns]).to(torch.int32)
    w_shift = weight_shift.to(torch.int32)[:, group_ids]  # [N, G4]
    column_w_shift = w_shift[:, table_index.long()]  # [N, K4]
    half = (1 << column_w_shift) >> 1
    q4 = ((codes[:, low_columns] + half) >> column_w_shift).clamp(-(1 << (LOW_BITS - 1)), (1 << (LOW_BITS - 1)) - 1)
    padded = -(-len(low_columns) // BLOCK_K) * BLOCK_K
    nibbles = torch.zeros(weight_codes.shape[0], padded, dtype=torch.int32)
    nibbles[:, : len(low_columns)] = q4 & 0xF
    packed = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).t().to(torch.uint8).contiguous()
    column_group_padded = torch.zeros(padded, dtype=torch.int32)
    column_group_padded[: len(low_columns)] = table_index
    lowered_sum = (q4 << column_w_shift).sum(dim=1)
    column_sums = (codes[:, high_columns].sum(dim=1) + lowered_sum).to(torch.int32)
    return TritonPackedWeights(
        high_columns, low_columns, weight_codes[:, high_columns].t().contiguous(), packed, column_group_padded,
        w_shift.t().contiguous() if len(group_ids) else torch.zeros(1, weight_codes.shape[0], dtype=torch.int32),
        act_shift.to(torch.int32)[group_ids].contiguous() if len(group_ids) else torch.zeros(1, dtype=torch.int32),
        column_sums)


@triton.jit
def _lowered_activation(a_ptr, rows, columns, row_mask, k4, column_group, act_shift_ptr, SIGNED: tl.constexpr):
    """INT8 activation codes of `columns` extracted to 4-bit and put back on the INT8 grid (int8 operand)."""
    codes = tl.load(a_ptr + rows[:, None] * k4 + columns[None, :], mask=row_mask[:, None] & (columns[None, :] < k4),
                    other=0).to(tl.int32)
    shift = tl.load(act_shift_ptr + column_group)[None, :]
    if SIGNED:
        q4 = tl.minimum(tl.maximum((codes + ((1 << shift) >> 1)) >> shift, -8), 7)
        return (q4 << shift).to(tl.int8)
    q4 = tl.minimum(tl.maximum((codes + ((1 << shift) >> 1)) >> shift, 0), 15)
    return ((q4 << shift) - 128).to(tl.int8)


@triton.jit
def _mixed_gemm_kernel(a8_ptr, a4_ptr, w8_ptr, nibble_ptr, column_group_ptr, w_shift_ptr, act_shift_ptr,
                       column_sum_ptr, out_ptr, M, N, K8, K4, K4_PADDED,
                       SIGNED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask, col_mask = rows < M, cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, K8, BLOCK_K):  # the 8-bit part
        k = k0 + ks
        a = tl.load(a8_ptr + rows[:, None] * K8 + k[None, :], mask=row_mask[:, None] & (k[None, :] < K8), other=0)
        if not SIGNED:
            a = (a.to(tl.int32) - 128).to(tl.int8)
        w = tl.load(w8_ptr + k[:, None] * N + cols[None, :], mask=(k[:, None] < K8) & col_mask[None, :], other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
    pairs = tl.arange(0, BLOCK_K // 2)
    for k0 in range(0, K4_PADDED, BLOCK_K):  # the 4-bit part: even and odd columns of each byte
        even = k0 + 2 * pairs
        odd = even + 1
        packed = tl.load(nibble_ptr + (k0 // 2 + pairs)[:, None] * N + cols[None, :], mask=col_mask[None, :],
                         other=0).to(tl.int32)
        group_even = tl.load(column_group_ptr + even)
        group_odd = tl.load(column_group_ptr + odd)
        shift_even = tl.load(w_shift_ptr + group_even[:, None] * N + cols[None, :], mask=col_mask[None, :], other=0)
        shift_odd = tl.load(w_shift_ptr + group_odd[:, None] * N + cols[None, :], mask=col_mask[None, :], other=0)
        w_even = ((((packed & 15) ^ 8) - 8) << shift_even).to(tl.int8)
        w_odd = (((((packed >> 4) & 15) ^ 8) - 8) << shift_odd).to(tl.int8)
        a_even = _lowered_activation(a4_ptr, rows, even, row_mask, K4, group_even, act_shift_ptr, SIGNED)
        a_odd = _lowered_activation(a4_ptr, rows, odd, row_mask, K4, group_odd, act_shift_ptr, SIGNED)
        acc = tl.dot(a_even, w_even, acc, out_dtype=tl.int32)
        acc = tl.dot(a_odd, w_odd, acc, out_dtype=tl.int32)
    if not SIGNED:
        acc += 128 * tl.load(column_sum_ptr + cols, mask=col_mask, other=0)[None, :]
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], acc, mask=row_mask[:, None] & col_mask[None, :])


def mixed_gemm(act_codes: torch.Tensor, packed: TritonPackedWeights, signed: bool,
               block_m: int = 32, block_n: int = 32) -> torch.Tensor:
    """[M, N] int32 accumulator from INT8 activation codes [M, K] (int8, or uint8 when unsigned).

    The activation columns are split into the 8-bit and 4-bit parts here (a producer that writes
    them in this order would skip the gather)."""
    device = act_codes.device
    tensors = [packed.high, packed.low_nibbles, packed.low_column_group, packed.weight_shift, packed.act_shift,
               packed.column_sums]
    high, nibbles, column_group, w_shift, a_shift, column_sums = (t.to(device) for t in tensors)
    a8 = act_codes[:, packed.high_columns.to(device)].contiguous()
    a4 = act_codes[:, packed.low_columns.to(device)].contiguous()
    m, n = act_codes.shape[0], high.shape[1]
    out = torch.empty(m, n, dtype=torch.int32, device=device)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _mixed_gemm_kernel[grid](a8, a4, high, nibbles, column_group, w_shift, a_shift, column_sums, out,
                             m, n, a8.shape[1], a4.shape[1], column_group.shape[0],
                             SIGNED=signed, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=BLOCK_K)
    return out
