"""The integer CPU path of FlexiQ's mixed GEMM: int8 codes in, int32 accumulator out.

    acc[m, o] = sum over 8-bit columns k of a[m, k] * w[o, k]
              + sum over 4-bit columns k of 2^(s_a[k] + s_w[o, k]) * a4[m, k] * w4[o, k]

with a4 = clip(round_half_up(a / 2^s_a)) and w4 likewise (method.md). Since
2^(s_a + s_w) a4 w4 = (2^s_a a4)(2^s_w w4), the shifted int4 x int4 product is the product of the
two *lowered* codes 2^s q4, and those stay on the INT8 grid (signed: [-128, 112]; unsigned
activations: [0, 240]). So one int8 GEMM over [8-bit codes | lowered 4-bit codes] computes the
whole mixed accumulator exactly. x86 has no instruction that makes 4-bit products faster than int8
ones, so this is the fastest exact form here: the GEMM is `torch._int_mm` (oneDNN, VNNI on x86),
and the 4-bit groups cost only the extraction, done in one numba pass that also writes the GEMM
operand. Weights are lowered once per ratio level (`pack_weights`). Unsigned activations ([0, 255],
no int8) are offset by -128 and corrected with 128 x the weight column sums.

Inputs are plain tensors; the formula is checked against flexiq_search.quant.arithmetic (the
project's single definition) in tests, never imported from it (kernels stay standalone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

LOW_BITS = 4
EIGHT_BIT = -1  # column shift marking a column that stays INT8


@numba.njit(cache=True, nogil=True, parallel=True)
def _lower_into(codes, shift, half, lo, hi, rows_per_shift, offset, out):
    """out[m, k] = lowered code - offset, as int8, from per-(shift row, column) tables (`_lowering_tables`)."""
    rows, cols = codes.shape
    for m in numba.prange(rows):
        row = m // rows_per_shift
        for k in range(cols):
            value = (np.int32(codes[m, k]) + half[row, k]) >> shift[row, k]
            out[m, k] = (min(max(value, lo[row, k]), hi[row, k]) << shift[row, k]) - offset


def _lowering_tables(column_shift: torch.Tensor, signed: bool) -> tuple[np.ndarray, ...]:
    """int32 shift, half (rounding), lo and hi (clamp) per entry of `column_shift`, branch-free: an
    INT8 entry (EIGHT_BIT) gets shift 0 and an open clamp, so the lowering expression copies it."""
    low = column_shift >= 0
    shift = torch.where(low, column_shift, 0).to(torch.int32)
    lo, hi = (-(1 << (LOW_BITS - 1)), (1 << (LOW_BITS - 1)) - 1) if signed else (0, (1 << LOW_BITS) - 1)
    return (shift.numpy(), ((1 << shift) >> 1).numpy(), torch.where(low, lo, -(1 << 30)).to(torch.int32).numpy(),
            torch.where(low, hi, 1 << 30).to(torch.int32).numpy())


def lower_codes(codes: torch.Tensor, column_shift: torch.Tensor, signed: bool, offset: int = 0) -> torch.Tensor:
    """[M, K] int8 GEMM operand from INT8 codes [M, K] (int8, or uint8 when unsigned).

    column_shift [S, K] int8: the extraction shift of each column, 0..4 (EIGHT_BIT for INT8 columns), one
    row per block of M / S consecutive rows (S = 1: static shifts; S = batch: dynamic, per sample).
    """
    rows = codes.shape[0]
    if rows % column_shift.shape[0]:
        raise ValueError("rows must split evenly over the shift rows")
    out = torch.empty(codes.shape, dtype=torch.int8)
    _lower_into(codes.numpy(), *_lowering_tables(column_shift, signed), max(rows // column_shift.shape[0], 1), offset,
                out.numpy())
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _lower_to_padded_nhwc(codes, shift, half, lo, hi, offset, pad_h, pad_w, out):
    """Lower NCHW codes (any strides) per (sample, channel) into a zero-padded NHWC int8 tensor.

    Branch-free (`_lowering_tables`); the innermost loop runs over channels, contiguous in the output (and in the input
    when it arrives channels-last, as the previous integer layer's output does).
    """
    batch, channels, height, width = codes.shape
    shift_step = 1 if shift.shape[0] > 1 else 0  # one shift row per sample, or one for all
    for n in numba.prange(batch):
        out[n] = -offset
        row = n * shift_step
        for h in range(height):
            for w in range(width):
                for c in range(channels):
                    value = (np.int32(codes[n, c, h, w]) + half[row, c]) >> shift[row, c]
                    out[n, h + pad_h, w + pad_w, c] = (min(max(value, lo[row, c]), hi[row, c]) << shift[row, c]) - offset


@numba.njit(cache=True, nogil=True, parallel=True)
def _patches_into(padded, kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, out_h, out_w, out):
    """im2col of a padded NHWC int8 tensor, tap-major: out[n * L + position, (i, j, c)] (rows in parallel)."""
    channels = padded.shape[3]
    positions = out_h * out_w
    for row in numba.prange(out.shape[0]):
        n = row // positions
        top = ((row % positions) // out_w) * stride_h
        left = (row % out_w) * stride_w
        for i in range(kernel_h):
            for j in range(kernel_w):
                start = (i * kernel_w + j) * channels
                out[row, start:start + channels] = padded[n, top + i * dil_h, left + j * dil_w, :]


def padded_operand(codes: torch.Tensor, padding, channel_shift: torch.Tensor, signed: bool) -> torch.Tensor:
    """NCHW INT8 codes (any integer dtype) as a zero-padded NHWC int8 tensor: 4-bit channels
    lowered, unsigned codes offset by -128, once per input element (not once per patch element).
    channel_shift [S, C] as in `lower_codes`, per channel (S = 1 or the batch size)."""
    batch, channels, height, width = codes.shape
    ph, pw = padding
    padded = torch.empty(batch, height + 2 * ph, width + 2 * pw, channels, dtype=torch.int8)
    _lower_to_padded_nhwc(codes.numpy(), *_lowering_tables(channel_shift, signed), 0 if signed else 128, ph, pw,
                          padded.numpy())
    return padded


def output_size(padded: torch.Tensor, kernel_size, stride, dilation) -> tuple[int, int]:
    """Output height and width of a convolution over an already padded NHWC tensor."""
    return tuple((size - d * (k - 1) - 1) // s + 1
                 for size, k, s, d in zip(padded.shape[1:3], kernel_size, stride, dilation))


def im2col_operand(padded: torch.Tensor, kernel_size, stride, dilation) -> torch.Tensor:
    """The int8 GEMM operand [N * L, kh * kw * C] of a convolution over `padded_operand`'s output.

    Columns are *tap-major* (kernel row, kernel column, channel), so that each tap copies a
    contiguous run of channels (4x faster than unfold's channel-major order here); weights are
    packed in the same order (`tap_major`).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    if (kh, kw, sh, sw) == (1, 1, 1, 1):  # a pointwise conv: the NHWC rows are the operand already
        return padded.view(-1, padded.shape[3])
    out_h, out_w = output_size(padded, kernel_size, stride, dilation)
    out = torch.empty(padded.shape[0] * out_h * out_w, kh * kw * padded.shape[3], dtype=torch.int8)
    _patches_into(padded.numpy(), kh, kw, sh, sw, dh, dw, out_h, out_w, out.numpy())
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _depthwise_into(padded, weight, stride_h, stride_w, dil_h, dil_w, out_h, out_w, out):
    """out[n * L + position, c] = sum over taps of padded[n, ..., c] * weight[i, j, c] in int32."""
    kernel_h, kernel_w, channels = weight.shape
    positions = out_h * out_w
    for row in numba.prange(out.shape[0]):
        n = row // positions
        top = ((row % positions) // out_w) * stride_h
        left = (row % out_w) * stride_w
        acc = out[row]
        acc[:] = 0
        for i in range(kernel_h):
            for j in range(kernel_w):
                source = padded[n, top + i * dil_h, left + j * dil_w]
                tap = weight[i, j]
                for c in range(channels):
                    acc[c] += np.int32(source[c]) * np.int32(tap[c])


def depthwise_conv(padded: torch.Tensor, packed: PackedWeights, kernel_size, stride, dilation,
                   signed: bool) -> torch.Tensor:
    """A depthwise convolution straight from `padded_operand`'s output (no im2col): [N * L, C] int32.
    `packed` holds tap-major [C, kh * kw] weights (one output per channel)."""
    out_h, out_w = output_size(padded, kernel_size, stride, dilation)
    weight = packed.matrix.view(*kernel_size, -1).numpy()
    out = torch.empty(padded.shape[0] * out_h * out_w, padded.shape[3], dtype=torch.int32)
    _depthwise_into(padded.numpy(), weight, stride[0], stride[1], dilation[0], dilation[1], out_h, out_w, out.numpy())
    if not signed:
        out += 128 * packed.column_sums
    return out


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """[O, C, kh, kw] conv weights (or per-weight shifts) as [O, kh * kw * C], `im2col_operand`'s order."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


@dataclass
class PackedWeights:
    """One layer's weights at one ratio level: lowered where 4-bit, transposed for the GEMM."""

    matrix: torch.Tensor  # [K, O] int8, row-major
    column_sums: torch.Tensor  # [O] int32: sum over K (the unsigned-activation correction)


def pack_weights(weight_codes: torch.Tensor, weight_shift: torch.Tensor) -> PackedWeights:
    """weight_codes [O, K] int8; weight_shift [O, K] int8 (EIGHT_BIT where the column stays INT8)."""
    lowered = lower_codes(weight_codes.contiguous(), weight_shift.contiguous(), signed=True)
    return PackedWeights(_gemm_operand(lowered.t()), lowered.sum(dim=1, dtype=torch.int32))


def _gemm_operand(matrix: torch.Tensor) -> torch.Tensor:
    """An int8 copy with row-major strides. `.contiguous()` is not enough: a [1, N] tensor keeps a
    stride of (1, 1), which torch 2.14's CPU `_int_mm` misreads (wrong results; see the tests)."""
    return torch.empty(matrix.shape, dtype=torch.int8).copy_(matrix)


def activation_operand(act_codes: torch.Tensor, act_shift: torch.Tensor, signed: bool) -> torch.Tensor:
    """The int8 GEMM operand of INT8 activation codes (offset by -128 when unsigned)."""
    return lower_codes(act_codes.contiguous(), act_shift.contiguous(), signed, 0 if signed else 128)


def mixed_gemm(act_codes: torch.Tensor, act_shift: torch.Tensor, packed: PackedWeights, signed: bool) -> torch.Tensor:
    """[M, O] int32 accumulator from INT8 activation codes [M, K] (int8 / uint8) and column shifts [S, K]."""
    return gemm_operands(activation_operand(act_codes, act_shift, signed), packed, signed)


def gemm_operands(operand: torch.Tensor, packed: PackedWeights, signed: bool) -> torch.Tensor:
    """The int8 GEMM of a prepared activation operand, corrected for the unsigned offset."""
    acc = torch._int_mm(operand, packed.matrix)
    if not signed:
        acc += 128 * packed.column_sums
    return acc


def grouped_gemm(operand: torch.Tensor, packed: PackedWeights, groups: int, taps: int, signed: bool) -> torch.Tensor:
    """A grouped or depthwise convolution's GEMM on tap-major operands: operand [M, taps * C],
    weights of `pack_weights` on tap-major [O, taps * C/G] codes (O = G x Og): [M, O] int32.
    Each group's GEMM is small, so the groups run as one exact int32 contraction (depthwise
    convolutions have their own kernel, `depthwise_conv`)."""
    rows = operand.shape[0]
    per_group = packed.matrix.shape[0] // taps  # input channels per group
    out_per_group = packed.matrix.shape[1] // groups
    a = operand.view(rows, taps, groups, per_group).to(torch.int32)
    w = packed.matrix.view(taps, per_group, groups, out_per_group).to(torch.int32)
    acc = torch.einsum("mtgc,tcgo->mgo", a, w).reshape(rows, groups * out_per_group)
    if not signed:
        acc += 128 * packed.column_sums
    return acc
