"""A systolic-array NPU model for FlexiQ's mixed INT8/INT4 layers (DNNWeaver-v2 style array).

A layer is a GEMM: M output rows (output pixels x batch), N output columns (filters), K
reduction length (input channels x kernel taps), run `groups` times for grouped convolutions.
A processing element (PE) does one INT8 MAC or `int4_macs_per_pe` INT4 MACs per cycle, so the
4-bit part of K (`k_low`) streams `int4_macs_per_pe` times faster. Every 4-bit channel group's
partial sum must be shifted by 2^(s_w + s_a) before it joins the accumulator: that costs
`shift_cycles` per 4-bit group per fold in output-stationary mode (the PE's accumulator is busy),
and one extra pipeline stage per fold in weight-stationary mode (a shifter at the column foot).

Compute cycles of the INT8 case follow SCALE-Sim 3's timing exactly (its demand matrices: a fold
of output- or weight-stationary work plus pipeline fill and drain), which the tests check by
running SCALE-Sim itself:

    OS: folds = ceil(M/R) * ceil(N/C), cycles = folds * (K + R + C - 2) - 1
    WS: folds = ceil(K/R) * ceil(N/C), cycles = folds * (2R + C + M - 2) - 1

Memory: weights and activations stay INT8 in DRAM (FlexiQ stores one INT8 model; 4-bit operands
are extracted on chip), so 4-bit does not reduce traffic. With double buffering a layer takes
max(compute, memory) cycles. Everything is vectorized NumPy over layers: a whole network at
several ratios takes microseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DATAFLOWS = ("os", "ws")


@dataclass(frozen=True)
class NpuConfig:
    """The simulated accelerator. Clock in MHz, DRAM bandwidth in bytes per cycle."""

    rows: int = 32
    cols: int = 32
    dataflow: str = "os"
    clock_mhz: float = 1000.0
    dram_bytes_per_cycle: float = 64.0
    int4_macs_per_pe: int = 2
    shift_cycles: int = 1
    switch_cycles_per_layer: int = 1  # writing one layer's boundary register

    def __post_init__(self) -> None:
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {self.dataflow!r}")
        if self.rows < 1 or self.cols < 1 or self.int4_macs_per_pe < 1 or self.clock_mhz <= 0:
            raise ValueError("rows, cols, int4_macs_per_pe and clock_mhz must be positive")
        if self.dram_bytes_per_cycle <= 0 or self.shift_cycles < 0 or self.switch_cycles_per_layer < 0:
            raise ValueError("dram_bytes_per_cycle must be positive, shift and switch cycles non-negative")

    def describe(self) -> dict:
        return {"simulator": "flexiq npu_sim (SCALE-Sim-3-compatible timing)", **asdict(self)}


def _ceil_div(a: np.ndarray, b) -> np.ndarray:
    return -(-a // b)


def compute_cycles(m, n, k, config: NpuConfig, k_low=0, low_groups=0, groups=1) -> np.ndarray:
    """Compute cycles per layer (arrays broadcast): the INT8 part of K at one MAC per PE cycle,
    the 4-bit part at `int4_macs_per_pe`, plus the shift cost of the 4-bit groups."""
    m, n, k, k_low, low_groups, groups = (np.asarray(v, dtype=np.int64) for v in (m, n, k, k_low, low_groups, groups))
    if np.any(k_low > k) or np.any(k_low < 0):
        raise ValueError("k_low must lie in [0, k]")
    k_eff = (k - k_low) + _ceil_div(k_low, config.int4_macs_per_pe)
    rows, cols = config.rows, config.cols
    has_low = (k_low > 0).astype(np.int64)
    if config.dataflow == "os":
        folds = _ceil_div(m, rows) * _ceil_div(n, cols)
        per_fold = k_eff + rows + cols - 2 + config.shift_cycles * low_groups
    else:
        folds = _ceil_div(k_eff, rows) * _ceil_div(n, cols)
        per_fold = 2 * rows + cols + m - 2 + config.shift_cycles * has_low
    return groups * (folds * per_fold - 1)


def memory_cycles(m, n, k, config: NpuConfig, input_bytes=None, groups=1) -> np.ndarray:
    """DRAM cycles: INT8 weights (K x N per group), input activations, INT8 outputs (M x N per group)."""
    m, n, k, groups = (np.asarray(v, dtype=np.int64) for v in (m, n, k, groups))
    inputs = m * k * groups if input_bytes is None else np.asarray(input_bytes, dtype=np.int64)
    traffic = groups * (k * n + m * n) + inputs
    return np.ceil(traffic / config.dram_bytes_per_cycle).astype(np.int64)


def layer_cycles(m, n, k, config: NpuConfig, k_low=0, low_groups=0, groups=1, input_bytes=None) -> dict:
    """Per-layer compute, memory and total (double-buffered: the larger of the two) cycles."""
    compute = compute_cycles(m, n, k, config, k_low, low_groups, groups)
    memory = memory_cycles(m, n, k, config, input_bytes, groups)
    return {"compute": compute, "memory": memory, "total": np.maximum(compute, memory)}


def switch_cycles(layers: int, config: NpuConfig) -> int:
    """Cost of a ratio switch: one boundary register per mixed layer, written one after another."""
    return int(layers) * config.switch_cycles_per_layer


def cycles_to_us(cycles, config: NpuConfig):
    return np.asarray(cycles, dtype=np.float64) / config.clock_mhz
