"""Run SCALE-Sim 3 (`scalesim` on PyPI) on GEMM layers: the reference our simulator is checked against.

SCALE-Sim needs a config, a topology CSV and a layout CSV, and writes its reports (and, unless told
not to, cycle traces of hundreds of MB) under a log folder: everything goes to a temporary folder
that is removed afterwards. Memory is made large enough that no layer stalls, so its "Total
Cycles" are compute cycles. Slow (tens of seconds for a few mid-sized layers): tests use small ones.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
from pathlib import Path

_CONFIG = """[general]
run_name = flexiq

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : 65536
FilterSramSzkB : 65536
OfmapSramSzkB : 65536
IfmapOffset : 0
FilterOffset : 100000000
OfmapOffset : 200000000
Dataflow : {dataflow}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def scalesim_gemm_cycles(layers: list[tuple[int, int, int]], rows: int, cols: int, dataflow: str) -> list[int]:
    """SCALE-Sim's "Total Cycles" for each (M, N, K) GEMM on a rows x cols array ("os" or "ws")."""
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory(prefix="flexiq-scalesim-") as folder:
        root = Path(folder)
        (root / "config.cfg").write_text(_CONFIG.format(rows=rows, cols=cols, dataflow=dataflow))
        topology = ["Layer name, M, N, K,"] + [f"layer{i}, {m}, {n}, {k}," for i, (m, n, k) in enumerate(layers)]
        (root / "topology.csv").write_text("\n".join(topology) + "\n")
        # A neutral layout (custom layouts are off, but SCALE-Sim still parses the file).
        layout = ["Layer name, " + ", ".join(["field"] * 20) + ","]
        layout += [f"layer{i}, 1, 1, 1, 1, 1, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3," for i in range(len(layers))]
        (root / "layout.csv").write_text("\n".join(layout) + "\n")
        simulator = scalesim(save_disk_space=True, verbose=False, config=str(root / "config.cfg"),
                             topology=str(root / "topology.csv"), layout=str(root / "layout.csv"),
                             input_type_gemm=True)
        with contextlib.redirect_stdout(io.StringIO()):
            simulator.run_scale(top_path=str(root))
        report = next(root.rglob("COMPUTE_REPORT.csv"))
        with open(report) as handle:
            rows_read = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle, skipinitialspace=True)]
        return [int(row["Total Cycles"]) for row in rows_read]
