"""The NPU simulator: INT8 timing equal to SCALE-Sim's (run here), and what 4-bit can and cannot buy."""

import time

import numpy as np
import pytest

from kernels.npu_sim import NpuConfig, compute_cycles, layer_cycles, switch_cycles

# Small GEMMs in the shape of conv layers (M output pixels, N filters, K = C x kh x kw), so that
# SCALE-Sim itself runs in seconds: a 3x3 conv, a 1x1 conv, a strided 3x3 conv, a classifier-like GEMM.
SMALL_LAYERS = [(196, 32, 72), (49, 64, 32), (100, 24, 144), (4, 40, 96)]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("size", [8, 16])
def test_int8_compute_cycles_agree_with_scalesim(size, dataflow):
    from kernels.scalesim_reference import scalesim_gemm_cycles

    started = time.perf_counter()
    reference = scalesim_gemm_cycles(SMALL_LAYERS, size, size, dataflow)
    scalesim_seconds = time.perf_counter() - started
    m, n, k = (np.array(column) for column in zip(*SMALL_LAYERS))
    started = time.perf_counter()
    ours = compute_cycles(m, n, k, NpuConfig(rows=size, cols=size, dataflow=dataflow))
    ours_seconds = time.perf_counter() - started
    for mine, theirs in zip(ours.tolist(), reference):
        assert abs(mine - theirs) <= 0.02 * theirs, (mine, theirs)
    assert ours_seconds < scalesim_seconds


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_four_bit_speedup_is_bounded_by_two_and_monotone(dataflow):
    config = NpuConfig(dataflow=dataflow, dram_bytes_per_cycle=1e9)  # compute-bound
    m, n, k = 3136, 256, 2304  # a large 3x3 conv
    shares = np.linspace(0, 1, 9)
    k_low = np.round(shares * k).astype(int)
    cycles = compute_cycles(m, n, k, config, k_low=k_low, low_groups=np.round(shares * 32).astype(int))
    speedup = cycles[0] / cycles
    assert np.all(np.diff(cycles) <= 0), "more 4-bit never costs more cycles"
    assert speedup[-1] <= 2.0 and speedup[-1] > 1.8, speedup[-1]
    # Never worse than linear between INT8 and all-4-bit (the paper's 50% -> 40% of the gain), up to
    # the fold granularity of weight-stationary mapping (K is cut into folds of `rows`).
    linear = cycles[0] + shares * (cycles[-1] - cycles[0])
    one_fold = 0 if dataflow == "os" else (2 * config.rows + config.cols + m - 2) * -(-n // config.cols)
    assert np.all(cycles <= linear + one_fold + 1)


def test_memory_bound_layers_gain_nothing_from_4bit():
    config = NpuConfig(dram_bytes_per_cycle=1.0)
    int8 = layer_cycles(4, 1000, 1280, config)
    low = layer_cycles(4, 1000, 1280, config, k_low=1280, low_groups=160)
    assert int8["memory"] > int8["compute"] and low["total"] == int8["total"]


def test_depthwise_runs_each_group_and_switch_cost_scales_with_layers():
    config = NpuConfig()
    one = compute_cycles(3136, 1, 9, config)
    assert compute_cycles(3136, 1, 9, config, groups=32) == 32 * one
    assert switch_cycles(50, config) == 50 * config.switch_cycles_per_layer


@pytest.mark.parametrize("kwargs", [{"dataflow": "is"}, {"rows": 0}, {"dram_bytes_per_cycle": 0}])
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        NpuConfig(**kwargs)


def test_k_low_outside_range_is_refused():
    with pytest.raises(ValueError):
        compute_cycles(10, 10, 10, NpuConfig(), k_low=11)
