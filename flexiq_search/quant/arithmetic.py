"""The FlexiQ integer arithmetic, written once.

Every other path is tested against this module: the fake-quant modules (`quant.modules`) use the
elementwise functions below directly, and the int64 NumPy reference `mixed_accumulator` is the
literal formula of method.md that both the fake-quant forward and the integer kernels must equal.

The elementwise functions work on NumPy arrays and torch tensors alike (they use only operators
and `.clip`), so there is a single definition of codes, shifts and extraction. Pass integer
arrays of at least 16 bits: intermediate sums overflow int8.

Conventions (method.md, "Quantization scheme"):
- signed INT8 codes are symmetric, [-127, 127]; unsigned codes (after ReLU-like ops) are [0, 255];
- a 4-bit code is extracted from an INT8 code by skipping the high bits the group never uses:
  s = max(0, bits_used - 4), q4 = clip(round_half_up(q8 / 2^s)) in [-8, 7] or [0, 15];
- its value on the INT8 grid is 2^s * q4 (the "lowered code"), so no second scale exists;
- the naive variant always takes the top 4 bits (s = 4) whatever the group's range.
"""

from __future__ import annotations

import numpy as np

INT8_SIGNED_RANGE = (-127, 127)
INT8_UNSIGNED_RANGE = (0, 255)
LOW_BITS = 4
HIGH_BITS = 8
MAX_SHIFT = HIGH_BITS - LOW_BITS  # the most low bits extraction ever drops (naive extraction's shift)
EXTRACTION_MODES = ("shift", "naive")


def int8_range(signed: bool) -> tuple[int, int]:
    """Code range of an INT8 operand: symmetric when signed, [0, 255] after ReLU-like ops."""
    return INT8_SIGNED_RANGE if signed else INT8_UNSIGNED_RANGE


def low_bit_range(signed: bool, bits: int = LOW_BITS) -> tuple[int, int]:
    """Code range of an extracted low-bit operand: the full two's-complement or unsigned range."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def bits_used(max_magnitude, signed: bool):
    """Bits an INT8 code needs to hold magnitudes up to `max_magnitude` (sign bit included).

    Computed as a sum of integer comparisons so that NumPy and torch give the same answer.
    """
    length = 0
    for k in range(HIGH_BITS):
        length = length + ((max_magnitude >> k) != 0) * 1
    return length + (1 if signed else 0)


def extraction_shift(max_magnitude, signed: bool, mode: str = "shift", bits: int = LOW_BITS):
    """How many low bits to drop so that a group's codes fit in `bits` bits.

    `mode="shift"` skips only the high bits the group never uses (FlexiQ's extraction);
    `mode="naive"` always keeps the top `bits` of the 8-bit code.
    """
    if mode == "naive":
        return max_magnitude * 0 + (HIGH_BITS - bits)
    if mode != "shift":
        raise ValueError(f"unknown extraction mode {mode!r}; expected one of {EXTRACTION_MODES}")
    return (bits_used(max_magnitude, signed) - bits).clip(min=0)


def extract_low_bits(codes, shift, signed: bool, bits: int = LOW_BITS):
    """4-bit codes q4 = clip(round_half_up(codes / 2^shift)), by integer add-and-shift."""
    lo, hi = low_bit_range(signed, bits)
    half = (1 << shift) >> 1
    return ((codes + half) >> shift).clip(min=lo, max=hi)


def lowered_codes(codes, shift, signed: bool, bits: int = LOW_BITS):
    """The extracted 4-bit operand expressed on the INT8 grid: 2^shift * q4."""
    return extract_low_bits(codes, shift, signed, bits) * (1 << shift)


def mixed_accumulator(
    act_codes: np.ndarray,
    weight_codes: np.ndarray,
    column_channel: np.ndarray,
    act_shift: np.ndarray,
    weight_shift: np.ndarray,
    low_bit_groups: np.ndarray,
    group_size: int,
    act_signed: bool,
) -> np.ndarray:
    """Reference int64 accumulator of one mixed layer, written as method.md states it.

    acc[m, o] = sum over 4-bit groups g of 2^(s_w[o, g] + s_a[g]) * (int4 dot over g)
              + sum over 8-bit groups of (int8 dot),
    with act_codes [M, K] (im2col rows), weight_codes [O, K], column_channel [K] the input channel
    of each column, act_shift [G], weight_shift [O, G], low_bit_groups [G] bool.
    """
    a = np.asarray(act_codes, dtype=np.int64)
    w = np.asarray(weight_codes, dtype=np.int64)
    column_group = np.asarray(column_channel) // group_size
    acc = np.zeros((a.shape[0], w.shape[0]), dtype=np.int64)
    for g in np.unique(column_group):
        cols = column_group == g
        a_g, w_g = a[:, cols], w[:, cols]
        if not low_bit_groups[g]:
            acc += a_g @ w_g.T
            continue
        s_a = np.int64(act_shift[g])
        s_w = weight_shift[:, g].astype(np.int64)
        a4 = extract_low_bits(a_g, s_a, act_signed)
        w4 = extract_low_bits(w_g, s_w[:, None], True)
        acc += (a4 @ w4.T) << (s_a + s_w)[None, :]
    return acc


def im2col(x: np.ndarray, kernel: tuple[int, int], stride, padding, dilation) -> np.ndarray:
    """Patches of an NCHW array as rows [N * L, C * kh * kw] (torch's unfold order), for references."""
    n, c, h, w = x.shape
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, out_h, out_w), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + sh * out_h : sh, j * dw : j * dw + sw * out_w : sw]
    return cols.reshape(n, c * kh * kw, out_h * out_w).transpose(0, 2, 1).reshape(n * out_h * out_w, -1)
