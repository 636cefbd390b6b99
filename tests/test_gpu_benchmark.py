"""benchmarks/gpu_kernels.py never reports a number it did not measure on a GPU: here it says why
in one line and exits 3."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
@pytest.mark.parametrize("interpret", ["1", "0"])
def test_without_cuda_it_exits_3_with_the_reason(interpret):
    result = subprocess.run([sys.executable, "benchmarks/gpu_kernels.py", "--rounds", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRITON_INTERPRET": interpret})
    assert result.returncode == 3, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert ("TRITON_INTERPRET" if interpret == "1" else "no CUDA device") in result.stderr
