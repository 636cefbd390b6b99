"""Search throughput on this machine, side by side in one run; writes the `search_throughput`
section of docs/RESULTS.md.

Candidate evaluations per second of one generation-sized batch: in-process (the fitness evaluator
with torch's own threads), and on a local Ray cluster with 1 and 2 fitness actors (one core
each). Time per generation split into evaluation (inside the actors), transfer (the rest of the
round trip: pickling masks, scheduling, results) and storage (the generation's checkpoint written
to the SQLite store). ResNet-20 at Fashion-MNIST size with 256 real Fashion-MNIST calibration
images; the weights are random (speed does not depend on them).

    .venv/bin/python benchmarks/search_throughput.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from flexiq_search.data import get_dataset
from flexiq_search.evaluation import calibration_batches
from flexiq_search.models import create_model
from flexiq_search.quant.convert import convert_model
from flexiq_search.selection.fitness import FitnessEvaluator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, write_section  # noqa: E402

BATCH = 48  # candidates per generation: e.g. 4 islands x 12, or 3 levels' worth of a population of 16
ROUNDS = 3


def candidates(evaluator: FitnessEvaluator, count: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    layers = dict(zip(evaluator.order, evaluator.layers))
    return [{name: torch.rand(layers[name].n_groups, generator=generator) < 0.5 for name in evaluator.eligible}
            for _ in range(count)]


def main() -> None:
    import ray

    from flexiq_search.store import Repository
    from workers import RayExecutor

    torch.manual_seed(0)
    bundle = get_dataset("fashion-mnist")
    images = torch.cat(calibration_batches(bundle, 256))
    qmodel = convert_model(create_model("resnet20", in_chans=1).eval(), images.split(64))
    local = FitnessEvaluator(qmodel, images, metric="kl", cache_bytes=0)  # no cache: every candidate computes
    results: dict = {"batch": BATCH, "rounds": ROUNDS, "cores": os.cpu_count()}

    def local_batch(seed):
        batch = candidates(local, BATCH, seed)
        started = time.perf_counter()
        [local(masks) for masks in batch]
        return time.perf_counter() - started

    local_batch(999)
    results["in-process"] = statistics.median(local_batch(r) for r in range(ROUNDS))
    print("in-process", results["in-process"], flush=True)

    executor = RayExecutor(workers=2)
    for workers in (1, 2):
        executor.workers = workers
        started = time.perf_counter()
        evaluate, release = executor.fitness_pool(qmodel, images, "kl")
        evaluate(candidates(local, workers, 1000))  # actors up
        startup = time.perf_counter() - started
        for actor in executor.actors:  # the same cache setting as in-process: every candidate computes
            ray.get(actor.set_cache_bytes.remote(0))
        walls, computes = [], []
        for r in range(ROUNDS):
            batch = candidates(local, BATCH, r)
            chunks = [batch[i::workers] for i in range(workers)]
            started = time.perf_counter()
            timed = ray.get([actor.score_timed.remote(chunk) for actor, chunk in zip(executor.actors, chunks)])
            walls.append(time.perf_counter() - started)
            computes.append(max(seconds for _, seconds in timed))
        release()
        results[f"ray-{workers}"] = {"wall": statistics.median(walls), "compute": statistics.median(computes),
                                     "startup": startup}
        print(workers, results[f"ray-{workers}"], flush=True)
    ray.shutdown()

    with tempfile.TemporaryDirectory() as folder:
        repo = Repository.open(f"sqlite:///{folder}/bench.db")
        study = repo.create_study("bench", "resnet20", "fashion-mnist", {}, ["npu-sim"])
        trial = repo.create_trial(study, 0, {})
        state = {"islands": [{"population": ["01" * 200] * 12, "fitness": [0.1] * 12}] * 4, "rng": list(range(625))}
        payload = zlib.compress(json.dumps(state).encode())
        times = []
        for _ in range(20):
            started = time.perf_counter()
            repo.save_checkpoint(trial, "evolution", payload)
            times.append(time.perf_counter() - started)
        results["storage"] = statistics.median(times)
        repo.close()
    (ARTIFACTS / "search_throughput.json").write_text(json.dumps(results, indent=1))
    text = render(results)
    write_section("search_throughput", text)
    print(text)


def render(r: dict) -> str:
    one, two = r["ray-1"], r["ray-2"]
    rate = lambda seconds: r["batch"] / seconds  # noqa: E731
    lines = [
        "## Search throughput: candidate evaluations per second, 1 and 2 Ray workers",
        "",
        f"Produced by `benchmarks/search_throughput.py`, measured on this machine ({r['cores']} cores); "
        f"ResNet-20 at Fashion-MNIST size, 256 calibration images, KL fitness without the prefix cache, "
        f"a batch of {r['batch']} candidates (one generation), median of {r['rounds']} rounds.",
        "",
        "| where | evaluations/s | vs 1 worker | per generation: evaluation | transfer | storage (SQLite) | actor start-up |",
        "|---|---|---|---|---|---|---|",
        f"| in-process (torch threads) | {rate(r['in-process']):.2f} | {one['wall'] / r['in-process']:.2f}x | "
        f"{r['in-process']:.2f} s | - | {r['storage'] * 1e3:.1f} ms | - |",
    ]
    for label, row in (("Ray, 1 worker", one), ("Ray, 2 workers", two)):
        lines.append(f"| {label} | {rate(row['wall']):.2f} | {one['wall'] / row['wall']:.2f}x | {row['compute']:.2f} s | "
                     f"{row['wall'] - row['compute']:.2f} s | {r['storage'] * 1e3:.1f} ms | {row['startup']:.1f} s |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
