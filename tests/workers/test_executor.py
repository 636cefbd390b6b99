"""The Ray executor on a real local Ray cluster: exact fitness, a killed worker loses nothing,
latency tasks routed by resource."""

import os
import signal
import threading
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from flexiq_search.errors import FlexiqError  # noqa: E402
from flexiq_search.quant.convert import convert_model  # noqa: E402
from flexiq_search.selection.fitness import FitnessEvaluator  # noqa: E402


@pytest.fixture(scope="module")
def executor():
    from workers import RayExecutor

    instance = RayExecutor(workers=2)
    yield instance
    ray.shutdown()


@pytest.fixture(scope="module")
def problem(trained_resnet20, digits_batches):
    qmodel = convert_model(trained_resnet20, digits_batches)
    images = digits_batches[0]
    local = FitnessEvaluator(qmodel, images, metric="kl")
    generator = torch.Generator().manual_seed(0)
    layers = dict(zip(local.order, local.layers))
    candidates = [{name: torch.rand(layers[name].n_groups, generator=generator) < 0.5 for name in local.eligible}
                  for _ in range(24)]
    return qmodel, images, candidates, [local(c) for c in candidates]


def test_actors_score_exactly_like_the_local_evaluator(executor, problem):
    qmodel, images, candidates, expected = problem
    evaluate, release = executor.fitness_pool(qmodel, images, "kl")
    try:
        assert evaluate(candidates) == expected
        assert evaluate(candidates[:1]) == expected[:1], "fewer candidates than actors"
    finally:
        release()


def test_a_worker_killed_mid_generation_loses_no_candidate(executor, problem):
    qmodel, images, candidates, expected = problem
    evaluate, release = executor.fitness_pool(qmodel, images, "kl")
    try:
        evaluate(candidates[:2])  # actors are up
        victim = ray.get(executor.actors[0].pid.remote())
        batch = candidates * 4  # long enough to be in flight when the kill lands
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("scores", evaluate(batch)))
        worker.start()
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        worker.join(timeout=300)
        assert result["scores"] == expected * 4, "every candidate scored once, with its exact fitness"
        assert ray.get(executor.actors[0].pid.remote()) != victim, "the actor was restarted"
    finally:
        release()


def test_latency_tasks_go_where_the_resource_is(executor, problem):
    qmodel, images, _, _ = problem
    result = executor.latency("npu-sim", qmodel, images[:1], [0.0, 0.5], "resnet20")
    assert result["provenance"] == "simulated" and result["ratios"][0]["cycles"] > 0
    with pytest.raises(FlexiqError, match="no node of the Ray cluster offers"):
        from workers import executor as module

        module.LATENCY_RESOURCES["fake"] = {"resources": {"fpga": 1}}
        try:
            executor.latency("fake", qmodel, images[:1], [0.0], "resnet20")
        finally:
            del module.LATENCY_RESOURCES["fake"]


def test_finetuning_runs_as_a_task_and_returns_loadable_weights(executor, trained_resnet20, digits_batches):
    from flexiq_search.evaluation import PreparedModel
    from flexiq_search.data import get_dataset
    from flexiq_search.finetune import FinetuneConfig
    from flexiq_search.selection import apply_selection, create_strategy

    qmodel = convert_model(trained_resnet20, digits_batches)
    apply_selection(qmodel, create_strategy("range").select(qmodel, [0.5, 1.0]))
    prepared = PreparedModel("resnet20", trained_resnet20, get_dataset("digits"))
    state = executor.finetune(qmodel, trained_resnet20, prepared, FinetuneConfig(epochs=1, train_samples=128,
                                                                                 batch_size=64, lr=1e-2))
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    qmodel.load_state_dict(state)
    changed = [k for k in state if k.endswith(("weight_codes", ".bias")) and not torch.equal(state[k], before[k])]
    assert changed, "the task trained the weights"
