"""The single formula: codes, shifts, extraction, and the reference accumulator's own sanity."""

import numpy as np
import pytest
import torch

from flexiq_search.quant.arithmetic import (
    bits_used, extract_low_bits, extraction_shift, im2col, low_bit_range, lowered_codes, mixed_accumulator,
)

SIGNED_CODES = np.arange(-127, 128)
UNSIGNED_CODES = np.arange(0, 256)


@pytest.mark.parametrize("signed", [True, False])
def test_bits_used_matches_python_bit_length(signed):
    magnitudes = np.arange(0, 128 if signed else 256)
    expected = np.array([int(m).bit_length() + signed for m in magnitudes])
    assert (bits_used(magnitudes, signed) == expected).all()
    assert (bits_used(torch.from_numpy(magnitudes), signed).numpy() == expected).all()


@pytest.mark.parametrize("signed, codes", [(True, SIGNED_CODES), (False, UNSIGNED_CODES)])
@pytest.mark.parametrize("mode", ["shift", "naive"])
def test_every_lowered_value_lies_on_the_int8_grid(signed, codes, mode):
    for max_magnitude in range(0, int(np.abs(codes).max()) + 1):
        group = codes[np.abs(codes) <= max_magnitude]
        shift = extraction_shift(np.array(max_magnitude), signed, mode)
        q4 = extract_low_bits(group, shift, signed)
        lo, hi = low_bit_range(signed)
        assert q4.min() >= lo and q4.max() <= hi
        lowered = lowered_codes(group, shift, signed)
        assert (lowered % (1 << int(shift)) == 0).all()
        assert lowered.min() >= (-128 if signed else 0) and lowered.max() <= (127 if signed else 255)
        # rounding error of at most half a coarse step, except where the top code clips
        err = np.abs(lowered - group)
        assert (err[np.abs(group) < (1 << int(shift)) * (hi - 0.5)] <= (1 << int(shift)) // 2).all()


def test_groups_that_fit_in_four_bits_are_extracted_losslessly():
    signed = np.arange(-8, 8)
    assert extraction_shift(np.array(8), True) == 1 and extraction_shift(np.array(7), True) == 0
    assert (lowered_codes(signed[signed > -8], extraction_shift(np.array(7), True), True) == signed[signed > -8]).all()
    unsigned = np.arange(0, 16)
    assert (lowered_codes(unsigned, extraction_shift(np.array(15), False), False) == unsigned).all()


def test_naive_always_takes_the_top_four_bits():
    assert extraction_shift(np.array(3), True, "naive") == 4
    assert (lowered_codes(np.arange(-7, 8), np.int64(4), True) == 0).all()


def test_extraction_beats_naive_on_small_ranges():
    rng = np.random.default_rng(0)
    codes = rng.integers(-20, 21, size=1000)
    m = np.abs(codes).max()
    err_shift = np.abs(lowered_codes(codes, extraction_shift(m, True), True) - codes).mean()
    err_naive = np.abs(lowered_codes(codes, extraction_shift(m, True, "naive"), True) - codes).mean()
    assert err_shift < err_naive / 3


def test_numpy_and_torch_agree_elementwise():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, size=(50, 8))
    shift = rng.integers(0, 5, size=(1, 8))
    np_result = lowered_codes(codes, shift, False)
    torch_result = lowered_codes(torch.from_numpy(codes), torch.from_numpy(shift), False)
    assert (np_result == torch_result.numpy()).all()


def test_reference_accumulator_equals_plain_int8_without_low_groups():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(5, 16))
    w = rng.integers(-127, 128, size=(3, 16))
    acc = mixed_accumulator(a, w, np.arange(16), np.zeros(2), np.zeros((3, 2)), np.zeros(2, bool), 8, False)
    assert (acc == a @ w.T).all()


def test_im2col_matches_torch_unfold():
    x = np.arange(2 * 3 * 7 * 6).reshape(2, 3, 7, 6)
    cols = im2col(x, (3, 2), (2, 1), (1, 0), (1, 2))
    ref = torch.nn.functional.unfold(torch.from_numpy(x).double(), (3, 2), dilation=(1, 2), padding=(1, 0), stride=(2, 1))
    assert (cols == ref.permute(0, 2, 1).reshape(cols.shape).numpy()).all()
