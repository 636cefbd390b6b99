"""The search's genetic operators keep their promises: on-target repair, in-layer mutation, whole-layer crossover."""

import random

import pytest
import torch

from flexiq_search.quant.convert import convert_model
from flexiq_search.selection.evolution import Chromosomes
from flexiq_search.selection.fitness import FitnessEvaluator


@pytest.fixture(scope="module")
def genes_and_model(trained_resnet20, digits_batches):
    model = convert_model(trained_resnet20, digits_batches)
    order = FitnessEvaluator(model, digits_batches[0][:4], cache_bytes=0).eligible
    return model, order


@pytest.mark.parametrize("budget", ["global", "per-layer"])
def test_repair_reaches_the_nearest_share_and_keeps_the_frozen_set(genes_and_model, budget):
    model, order = genes_and_model
    genes = Chromosomes(model, order, budget)
    rng = random.Random(0)
    frozen = genes.fill(torch.zeros(len(genes.macs), dtype=torch.bool), genes.range_harm, 0.25)
    for trial in range(5):
        noisy = torch.rand(len(genes.macs), generator=torch.Generator().manual_seed(trial)) < 0.7
        repaired = genes.repair(noisy, frozen, 0.5, rng)
        assert bool((repaired | ~frozen).all()), "the lower level's groups stay 4-bit"
        for unit in genes.units:
            share = float(genes.macs[unit][repaired[unit]].sum() / genes.macs[unit].sum())
            assert abs(share - 0.5) <= float(genes.macs[unit].max() / genes.macs[unit].sum()) / 2 + 1e-9


def test_mutation_swaps_inside_layers_and_crossover_exchanges_whole_layers(genes_and_model):
    model, order = genes_and_model
    genes = Chromosomes(model, order, "global")
    rng = random.Random(1)
    frozen = torch.zeros(len(genes.macs), dtype=torch.bool)
    parent = torch.rand(len(genes.macs), generator=torch.Generator().manual_seed(0)) < 0.5  # mixed layers
    child = genes.mutate(parent, frozen, 3, rng)
    assert not torch.equal(child, parent)
    per_layer = lambda flat: torch.zeros(len(genes.names)).index_add_(0, genes.layer_of, flat.float())  # noqa: E731
    assert torch.equal(per_layer(child), per_layer(parent)), "a swap keeps each layer's 4-bit count"
    other = ~parent
    for _ in range(5):
        mixed = genes.crossover(parent, other, rng)
        from_first = [bool((mixed[genes.layer_of == i] == parent[genes.layer_of == i]).all())
                      for i in range(len(genes.names))]
        cut = from_first.index(False)
        assert all(from_first[:cut]) and not any(from_first[cut:]), "a prefix of layers from one parent"
