"""`RayExecutor`: the search's heavy work on a Ray cluster.

- Fitness: `workers` actors each receive the converted model and the calibration images once
  (through the object store) and score the candidates sent to them; a generation's batch is
  split across them. Actors restart after a crash and their calls are retried, so a killed worker
  delays a generation but loses no candidate.
- Latency: one task per backend, asking for the resource of the nodes that can run it: `npu_sim`
  (a custom resource that simulator nodes advertise), `GPU`, or one CPU for the measured CPU
  path. A local cluster started here advertises `npu_sim`.
- Finetuning: one task (a GPU when the cluster has one).
- Devices: the search's `device` spec travels to the actors and tasks and is resolved there. When
  it means CUDA (`cuda...`, or `auto` on a cluster with GPUs) fitness actors ask for an equal share
  of the cluster's GPUs (at most one each) and finetuning for one GPU; models travel on the host.
"""

from __future__ import annotations

import dataclasses
import os
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: listeners on loopback

import ray  # noqa: E402
import torch  # noqa: E402

from flexiq_search.devices import AUTO, HOST, resolve_device, wants_gpu
from flexiq_search.errors import FlexiqError

# Where each latency backend may run: Ray resource requests.
LATENCY_RESOURCES = {"npu-sim": {"resources": {"npu_sim": 1}, "num_cpus": 0}, "cpu": {"num_cpus": 1},
                     "gpu": {"num_gpus": 1}}
RETRIES = 3


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS, as `ray job submit` sets); without one, start
    a local Ray bound to 127.0.0.1 that advertises the simulator resource."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 resources={"npu_sim": 1}, runtime_env=runtime_env, log_to_driver=False,
                 _node_ip_address="127.0.0.1")


@ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)
class FitnessActor:
    """Scores candidates of one converted model on the calibration images (loaded once)."""

    def __init__(self, qmodel, images, metric: str, device: str = AUTO) -> None:
        from flexiq_search.selection.fitness import FitnessEvaluator

        torch.set_num_threads(1)  # one core per actor: actors are the parallelism
        self.evaluator = FitnessEvaluator(qmodel, images, metric=metric, device=resolve_device(device))

    def placement(self) -> dict:
        """Where Ray put this actor and what it computes on (tests, operations)."""
        return {"resources": ray.get_runtime_context().get_assigned_resources(),
                "device": str(self.evaluator.images.device)}

    def score(self, candidates: list[dict]) -> list[float]:
        return [self.evaluator(masks) for masks in candidates]

    def score_timed(self, candidates: list[dict]) -> tuple[list[float], float]:
        """Scores and the seconds spent computing them (benchmarks split compute from transfer)."""
        started = time.perf_counter()
        scores = self.score(candidates)
        return scores, time.perf_counter() - started

    def set_cache_bytes(self, cache_bytes: int) -> None:
        self.evaluator.cache_bytes = cache_bytes
        self.evaluator.cache.clear()
        self.evaluator.cached_bytes = 0

    def pid(self) -> int:
        return os.getpid()


@ray.remote(max_retries=RETRIES)
def _latency_task(backend, qmodel, example, ratios, model_name):
    from flexiq_search.search import measure_latency

    return measure_latency(backend, qmodel, example, ratios, model_name)


@ray.remote(max_retries=RETRIES)
def _finetune_task(qmodel, teacher, prepared, config, device):
    from flexiq_search.search import finetuned_state

    return finetuned_state(qmodel, teacher, prepared, config, device)


def _on_host(module: torch.nn.Module) -> torch.nn.Module:
    """A host copy to ship through the object store (a worker may have no GPU, or another one)."""
    import copy

    return copy.deepcopy(module).to(HOST)


class RayExecutor:
    """The `flexiq_search.search.Executor` of a Ray cluster."""

    def __init__(self, address: str | None = None, workers: int = 1) -> None:
        connect(address)
        self.workers = workers
        self.actors: list = []
        self.job_id = ray.get_runtime_context().get_job_id()  # the driver's job on the cluster

    def gpu_share(self, device: str) -> float:
        """GPUs each of the pool's actors asks for: an equal share of the cluster's, at most one."""
        gpus = ray.cluster_resources().get("GPU", 0)
        if not wants_gpu(device, gpus):
            return 0
        if gpus <= 0:
            raise FlexiqError(f"device {device} asks for GPUs, but no node of the Ray cluster offers one "
                              "(start GPU nodes, or pass --device cpu)")
        return min(1.0, gpus / self.workers)

    def fitness_pool(self, qmodel, images, metric, device=AUTO):
        # Held for the pool's life: a restarted actor reads its constructor arguments again.
        self._arguments = (ray.put(_on_host(qmodel)), ray.put(images.to(HOST)))
        options = {"num_cpus": 1, "num_gpus": self.gpu_share(device)}
        self.actors = [FitnessActor.options(**options).remote(*self._arguments, metric, device)
                       for _ in range(self.workers)]

        def evaluate_batch(candidates: list[dict]) -> list[float]:
            chunks = [candidates[i::len(self.actors)] for i in range(len(self.actors))]
            results = ray.get([actor.score.remote(chunk) for actor, chunk in zip(self.actors, chunks) if chunk])
            scores = [0.0] * len(candidates)
            for offset, chunk_scores in enumerate(results):
                scores[offset::len(self.actors)] = chunk_scores
            return scores

        def release() -> None:
            for actor in self.actors:
                ray.kill(actor)
            self.actors, self._arguments = [], None

        return evaluate_batch, release

    def latency(self, backend, qmodel, example, ratios, model_name):
        options = LATENCY_RESOURCES.get(backend, {"num_cpus": 1})
        for resource, amount in options.get("resources", {}).items():
            if ray.cluster_resources().get(resource, 0) < amount:
                raise FlexiqError(f"no node of the Ray cluster offers the resource {resource!r} that backend "
                                  f"{backend} needs (start simulator nodes with --resources '{{\"{resource}\": 1}}')")
        return ray.get(_latency_task.options(**options).remote(backend, _on_host(qmodel), example.to(HOST), ratios,
                                                               model_name))

    def finetune(self, qmodel, teacher, prepared, config, device=AUTO):
        gpus = 1 if self.gpu_share(device) > 0 else 0
        data_only = dataclasses.replace(prepared, model=None, quantized=None)  # the task needs its bundle
        return ray.get(_finetune_task.options(num_gpus=gpus).remote(_on_host(qmodel), _on_host(teacher), data_only,
                                                                    config, device))
