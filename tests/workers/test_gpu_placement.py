"""Fitness actors and finetuning ask a real local Ray cluster for GPU shares when the device means
CUDA. The cluster advertises one logical GPU (Ray schedules by the resource; no GPU is needed to
place), and the actors, finding no CUDA device, compute on the CPU: scores stay exact."""

import pytest
import torch

ray = pytest.importorskip("ray")

from flexiq_search.errors import FlexiqError  # noqa: E402
from flexiq_search.quant.convert import convert_model  # noqa: E402
from flexiq_search.selection.fitness import FitnessEvaluator, current_masks  # noqa: E402


@pytest.fixture(scope="module")
def cluster_with_a_gpu():
    from workers.executor import connect

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    connect()  # a no-op now: the executor joins this cluster
    yield
    ray.shutdown()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the actors must fall back to the CPU here")
def test_actors_share_the_clusters_gpus_when_the_device_is_auto(cluster_with_a_gpu, trained_resnet20, digits_batches):
    from workers import RayExecutor

    qmodel = convert_model(trained_resnet20, digits_batches)
    images = digits_batches[0]
    masks = current_masks(qmodel)
    expected = FitnessEvaluator(qmodel, images, metric="kl")(masks)
    executor = RayExecutor(workers=2)
    assert executor.gpu_share("auto") == 0.5 and executor.gpu_share("cpu") == 0
    for device, share in (("auto", 0.5), ("cpu", None)):
        evaluate, release = executor.fitness_pool(qmodel, images, "kl", device)
        try:
            placements = ray.get([actor.placement.remote() for actor in executor.actors])
            assert [p["resources"].get("GPU") for p in placements] == [share, share], placements
            assert {p["device"] for p in placements} == {"cpu"}
            assert evaluate([masks, masks]) == [expected, expected]
        finally:
            release()


def test_cuda_on_a_cluster_without_gpus_is_one_line(trained_resnet20, digits_batches):
    from workers import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        with pytest.raises(FlexiqError, match="no node of the Ray cluster offers one"):
            RayExecutor(workers=1).fitness_pool(convert_model(trained_resnet20, digits_batches), digits_batches[0],
                                                "kl", "cuda")
    finally:
        ray.shutdown()
