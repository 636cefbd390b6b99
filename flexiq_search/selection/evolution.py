"""FlexiQ's evolutionary channel selection (method.md, "Search").

A chromosome is one bit per channel group of every eligible layer (True = 4-bit), held as one
flat bool tensor in execution order. Levels are searched from the lowest ratio up; each level
starts from the previous level's best set, frozen, so the levels nest by construction.

Per level and generation: elitism keeps the best few; parents come by tournament; one-point
crossover in execution order exchanges whole layers (and so moves 4-bit budget between layers);
mutation swaps a 4-bit group with an 8-bit group inside one layer; repair brings the 4-bit MAC
share back on target, dropping the most harmful and adding the least harmful groups (by the
value-range estimate) among a few random picks. The search stops early when the best fitness
has not improved for `patience` generations.

The first population holds the fills of the value-range ranking, the per-layer error greedy
ranking and a seeded random ranking (each topped up from the frozen set), then mutated copies of
them: the search can only improve on its seeds' calibration fitness, since the elite is kept.
"""

from __future__ import annotations

import random
import time
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..quant.convert import mixed_layers
from .base import LayerSelection, Selection, SelectionStrategy, record_shifts, register_strategy, validate_levels
from .fitness import FITNESS_METRICS, FitnessEvaluator
from .greedy_error import layer_output_errors
from .range import range_noise


class Chromosomes:
    """Flat group indexing of the eligible layers: MACs, owning layer, value-range harm per MAC."""

    def __init__(self, model: nn.Module, names: list[str], budget: str) -> None:
        layers = mixed_layers(model, eligible_only=True)
        self.names = names
        self.sizes = [layers[n].n_groups for n in names]
        self.starts = [sum(self.sizes[:i]) for i in range(len(names))]
        self.macs = torch.cat([layers[n].group_macs() for n in names])
        self.layer_of = torch.cat([torch.full((s,), i) for i, s in enumerate(self.sizes)])
        self.range_harm = torch.cat([range_noise(layers[n]) for n in names]) / self.macs
        # Budget units: the whole model, or every layer on its own.
        if budget == "global":
            self.units = [torch.arange(len(self.macs))]
        else:
            self.units = [torch.arange(start, start + size) for start, size in zip(self.starts, self.sizes)]

    def masks(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: flat[start:start + size] for name, start, size in zip(self.names, self.starts, self.sizes)}

    def fill(self, frozen: torch.Tensor, harm_per_mac: torch.Tensor, ratio: float) -> torch.Tensor:
        """Top up the frozen set in order of least harm per MAC until each unit reaches its share."""
        flat = frozen.clone()
        for unit in self.units:
            target = ratio * float(self.macs[unit].sum())
            low = float(self.macs[unit][flat[unit]].sum())
            for index in unit[torch.argsort(harm_per_mac[unit], stable=True)].tolist():
                if flat[index]:
                    continue
                mac = float(self.macs[index])
                if abs(low + mac - target) >= abs(low - target) and low + mac > target:
                    break
                flat[index] = True
                low += mac
        return flat

    def repair(self, flat: torch.Tensor, frozen: torch.Tensor, ratio: float, rng: random.Random,
               picks: int = 4) -> torch.Tensor:
        """Bring every unit's 4-bit MACs back to the nearest reachable value of its target."""
        flat = flat | frozen
        for unit in self.units:
            target = ratio * float(self.macs[unit].sum())
            low = float(self.macs[unit][flat[unit]].sum())
            while low > target:
                free = unit[flat[unit] & ~frozen[unit]].tolist()
                if not free:
                    break
                worst = max(rng.sample(free, min(picks, len(free))), key=lambda i: float(self.range_harm[i]))
                flat[worst] = False
                low -= float(self.macs[worst])
            while True:
                idle = unit[~flat[unit]].tolist()
                if not idle:
                    break
                best = min(rng.sample(idle, min(picks, len(idle))), key=lambda i: float(self.range_harm[i]))
                mac = float(self.macs[best])
                if abs(low + mac - target) >= abs(low - target):
                    break
                flat[best] = True
                low += mac
        return flat

    def mutate(self, flat: torch.Tensor, frozen: torch.Tensor, swaps: int, rng: random.Random) -> torch.Tensor:
        """Swap a free 4-bit group with an 8-bit group inside one layer (one that has both), `swaps` times."""
        flat = flat.clone()
        for _ in range(swaps):
            free_low = torch.zeros(len(self.names)).index_add_(0, self.layer_of, (flat & ~frozen).float())
            high = torch.zeros(len(self.names)).index_add_(0, self.layer_of, (~flat).float())
            layers = ((free_low > 0) & (high > 0)).nonzero().flatten().tolist()
            if not layers:
                break
            layer = rng.choice(layers)
            span = range(self.starts[layer], self.starts[layer] + self.sizes[layer])
            lowered = rng.choice([i for i in span if flat[i] and not frozen[i]])
            raised = rng.choice([i for i in span if not flat[i]])
            flat[lowered], flat[raised] = False, True
        return flat

    def crossover(self, first: torch.Tensor, second: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """One-point crossover on layer boundaries: the first parent's early layers, the second's late ones."""
        if len(self.names) < 2:
            return first.clone()
        cut = self.starts[rng.randrange(1, len(self.names))]
        return torch.cat([first[:cut], second[cut:]])


@register_strategy("evolution")
class EvolutionarySelection(SelectionStrategy):
    """Genetic search of 4-bit groups, level by level, on end-to-end logit distance to INT8."""

    needs_images = True

    def __init__(self, *, budget: str = "global", seed: int = 0, population: int = 16, generations: int = 20,
                 elite: int = 2, tournament: int = 3, crossover_rate: float = 0.7, mutation_swaps: int = 3,
                 patience: int = 6, metric: str = "mse", cache_bytes: int = 1 << 30, progress: bool = False) -> None:
        super().__init__(budget=budget, seed=seed)
        if population < 2 or generations < 0 or not 0 <= elite < population or tournament < 1:
            raise ValueError("evolution needs population >= 2, generations >= 0, 0 <= elite < population, tournament >= 1")
        if metric not in FITNESS_METRICS:
            raise ValueError(f"unknown fitness metric {metric!r}; expected one of {FITNESS_METRICS}")
        self.population, self.generations, self.elite, self.tournament = population, generations, elite, tournament
        self.crossover_rate, self.mutation_swaps, self.patience = crossover_rate, mutation_swaps, patience
        self.metric, self.cache_bytes, self.progress = metric, cache_bytes, progress

    def select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        images = self._require_images(images)
        levels = validate_levels(levels)
        started = time.perf_counter()
        rng = random.Random(self.seed)
        evaluator = FitnessEvaluator(model, images, metric=self.metric, cache_bytes=self.cache_bytes)
        genes = Chromosomes(model, evaluator.eligible, self.budget)
        errors = layer_output_errors(model, images)
        seed_harms = {"range": genes.range_harm,
                      "greedy-error": torch.cat([errors[n] for n in genes.names]) / genes.macs,
                      "random": torch.rand(len(genes.macs), generator=torch.Generator().manual_seed(self.seed),
                                           dtype=torch.float64)}

        frozen = torch.zeros(len(genes.macs), dtype=torch.bool)
        added_per_level, fitness_per_level, generations_run = [], [], []
        for ratio in levels:
            best, fitness, ran = self._search_level(genes, evaluator, frozen, ratio, seed_harms, rng)
            added_per_level.append(best & ~frozen)
            fitness_per_level.append(fitness)
            generations_run.append(ran)
            frozen = best

        selected = {}
        for index, name in enumerate(genes.names):
            span = slice(genes.starts[index], genes.starts[index] + genes.sizes[index])
            harm = genes.range_harm[span]
            order, boundaries = [], []
            for added in added_per_level + [~frozen]:
                groups = added[span].nonzero().flatten()
                order += groups[torch.argsort(harm[groups], stable=True)].tolist()
                boundaries.append(len(order))
            selected[name] = LayerSelection(order, boundaries[:len(levels)])
        provenance = {
            "seed": self.seed, "budget": self.budget, "metric": self.metric, "population": self.population,
            "generations": self.generations, "generations_run": generations_run, "fitness": fitness_per_level,
            "calibration": len(images), **evaluator.stats(),
            # wall times: the only provenance that differs between two runs with one seed
            "timing": {"seconds": time.perf_counter() - started, "forward_seconds": evaluator.forward_seconds},
        }
        group_size = mixed_layers(model, eligible_only=True)[genes.names[0]].group_size
        return record_shifts(model, Selection(self.name, levels, group_size, selected, provenance))

    def _search_level(self, genes: Chromosomes, evaluator: FitnessEvaluator, frozen: torch.Tensor, ratio: float,
                      seed_harms: dict[str, torch.Tensor], rng: random.Random) -> tuple[torch.Tensor, float, int]:
        score = lambda flat: evaluator(genes.masks(flat))  # noqa: E731
        if ratio >= 1:
            everything = torch.ones_like(frozen)
            return everything, score(everything), 0
        seeds = [genes.fill(frozen, harm, ratio) for harm in seed_harms.values()]
        population = list(seeds)
        while len(population) < self.population:
            parent = seeds[len(population) % len(seeds)]
            child = genes.mutate(parent, frozen, rng.randint(1, 2 * self.mutation_swaps), rng)
            population.append(genes.repair(child, frozen, ratio, rng))
        fitness = [score(flat) for flat in population]
        best_fitness, stalled, ran = min(fitness), 0, 0
        bar = tqdm(range(self.generations), desc=f"evolution {ratio:.0%}", disable=not self.progress,
                   mininterval=1.0, leave=False)
        for _ in bar:
            ranked = sorted(range(len(population)), key=lambda i: fitness[i])
            children = [population[i] for i in ranked[:self.elite]]
            child_fitness = [fitness[i] for i in ranked[:self.elite]]
            while len(children) < self.population:
                first = population[self._tournament(fitness, rng)]
                if rng.random() < self.crossover_rate:
                    child = genes.crossover(first, population[self._tournament(fitness, rng)], rng)
                else:
                    child = first
                child = genes.mutate(child, frozen, rng.randint(1, self.mutation_swaps), rng)
                child = genes.repair(child, frozen, ratio, rng)
                children.append(child)
                child_fitness.append(score(child))
            population, fitness = children, child_fitness
            ran += 1
            if min(fitness) < best_fitness * (1 - 1e-9):
                best_fitness, stalled = min(fitness), 0
            else:
                stalled += 1
            bar.set_postfix(best=f"{best_fitness:.4g}", refresh=False)
            if stalled >= self.patience:
                break
        bar.close()
        winner = min(range(len(population)), key=lambda i: fitness[i])
        return population[winner], fitness[winner], ran

    def _tournament(self, fitness: list[float], rng: random.Random) -> int:
        contenders = rng.sample(range(len(fitness)), min(self.tournament, len(fitness)))
        return min(contenders, key=lambda i: fitness[i])
