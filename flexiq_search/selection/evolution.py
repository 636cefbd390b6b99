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
ranking (measured on the search and validation images both, so it is greedy-error's own selection on
them) and a seeded random ranking (each topped up from the frozen set), then mutated copies of
them: the search can only improve on its seeds' calibration fitness, since the elite is kept.

Guard against fitting the calibration images: candidates are scored on one set of images and
every generation's best (and every seed) is also scored on a held-out validation set; the level's
winner is the best seed there, replaced by an evolved candidate only when its per-photo distances
are lower by more than `acceptance_z` standard errors (a paired test on the validation photos), and
the search stops early when the winner has not changed for `patience` generations. A lower search
fitness alone can be a selection that fits its images (measured: a lower KL to INT8 on the search
images and a lower top-1 on unseen ones), and a validation mean a few percent lower is within the
noise of a few dozen photos (measured on Lite0: a 5% lower KL on 64 photos, 3 photos fewer right).
"""

from __future__ import annotations

import copy
import random
import time
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..devices import HOST
from ..quant.convert import mixed_layers
from .base import LayerSelection, Selection, SelectionStrategy, record_shifts, register_strategy, validate_levels
from .fitness import FITNESS_METRICS, FitnessEvaluator, paired_improvement_z
from .greedy_error import layer_output_errors
from .range import range_noise


class Chromosomes:
    """Flat group indexing of the eligible layers: MACs, owning layer, value-range harm per MAC
    (host-side bookkeeping, wherever the model computes)."""

    def __init__(self, model: nn.Module, names: list[str], budget: str) -> None:
        layers = mixed_layers(model, eligible_only=True)
        self.names = names
        self.sizes = [layers[n].n_groups for n in names]
        self.starts = [sum(self.sizes[:i]) for i in range(len(names))]
        self.macs = torch.cat([layers[n].group_macs().to(HOST) for n in names])
        self.layer_of = torch.cat([torch.full((s,), i, device=HOST) for i, s in enumerate(self.sizes)])
        self.range_harm = torch.cat([range_noise(layers[n]).to(HOST) for n in names]) / self.macs
        # Budget units: the whole model, or every layer on its own.
        if budget == "global":
            self.units = [torch.arange(len(self.macs), device=HOST)]
        else:
            self.units = [torch.arange(start, start + size, device=HOST) for start, size in zip(self.starts, self.sizes)]

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
            free_low = torch.zeros(len(self.names), device=HOST).index_add_(0, self.layer_of, (flat & ~frozen).float())
            high = torch.zeros(len(self.names), device=HOST).index_add_(0, self.layer_of, (~flat).float())
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


BatchEvaluator = Callable[[list[dict[str, torch.Tensor]]], list[float]]
DEFAULT_VALIDATION_SHARE = 0.25
# An evolved winner must beat the best seed on the validation photos by this many standard errors
# of the per-photo difference (about 84% one-sided): below that, the seed (greedy-error's own
# selection) stays, so the evolution does not trade a measured selection for validation noise.
DEFAULT_ACCEPTANCE_Z = 1.0
VALIDATION_BATCH = 64  # validation photos per forward (a few hundred at 224 px would need gigabytes)


def split_validation(images: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(search images, validation images): the last `share` of the images validates (none if share is 0)."""
    if not 0 <= share < 1:
        raise ValueError(f"validation share must be in [0, 1), got {share}")
    held = int(round(share * len(images)))
    if share == 0 or held == 0:
        return images, None
    if held >= len(images):
        raise ValueError(f"{len(images)} calibration images cannot spare a {share:g} validation share")
    return images[:-held], images[-held:]


def _flat_to_text(flat: torch.Tensor) -> str:
    return "".join("1" if bit else "0" for bit in flat.tolist())


def _flat_from_text(text: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool, device=HOST)


@register_strategy("evolution")
class EvolutionarySelection(SelectionStrategy):
    """Genetic search of 4-bit groups, level by level, on end-to-end logit distance to INT8.

    `islands` populations evolve side by side; every `migration_interval` generations each
    island's best replaces the worst of the next island (a ring). All candidates of a generation,
    over all islands, are scored in one batch, so a caller can spread a batch over workers
    (`select(..., evaluate_batch=...)`). The search state after every generation is a JSON dict
    (`on_generation`); passing it back as `resume` continues the search exactly where it stopped.
    """

    needs_images = True

    def __init__(self, *, budget: str = "global", seed: int = 0, population: int = 16, generations: int = 20,
                 elite: int = 2, tournament: int = 3, crossover_rate: float = 0.7, mutation_swaps: int = 3,
                 patience: int = 6, metric: str = "kl", cache_bytes: int = 1 << 30, progress: bool = False,
                 islands: int = 1, migration_interval: int = 4,
                 validation_share: float = DEFAULT_VALIDATION_SHARE,
                 acceptance_z: float = DEFAULT_ACCEPTANCE_Z) -> None:
        super().__init__(budget=budget, seed=seed)
        if not acceptance_z >= 0:
            raise ValueError(f"evolution's acceptance_z must be >= 0, got {acceptance_z}")
        if not 0 <= elite < population or population < 2:
            raise ValueError(f"evolution needs a population larger than its elite ({elite}) and at least 2, "
                             f"got population {population}")
        if generations < 0 or tournament < 1:
            raise ValueError(f"evolution needs generations >= 0 and tournament >= 1, got {generations} and {tournament}")
        if islands < 1 or migration_interval < 1:
            raise ValueError("evolution needs islands >= 1 and migration_interval >= 1")
        if metric not in FITNESS_METRICS:
            raise ValueError(f"unknown fitness metric {metric!r}; expected one of {FITNESS_METRICS}")
        self.population, self.generations, self.elite, self.tournament = population, generations, elite, tournament
        self.crossover_rate, self.mutation_swaps, self.patience = crossover_rate, mutation_swaps, patience
        self.metric, self.cache_bytes, self.progress = metric, cache_bytes, progress
        self.islands, self.migration_interval = islands, migration_interval
        split_validation(torch.zeros(4, device=HOST), validation_share)  # validates the share
        self.validation_share = validation_share
        self.acceptance_z = acceptance_z

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None, *,
               validation_images: torch.Tensor | None = None, evaluate_batch: BatchEvaluator | None = None,
               resume: dict | None = None, on_generation: Callable[[dict], None] | None = None) -> Selection:
        """`images` score candidates; winners are chosen on `validation_images`. Without them, the
        last `validation_share` of `images` validates, unless `evaluate_batch` is given: a custom
        evaluator scores on images the caller chose, so the caller splits (`split_validation`)."""
        images = self._require_images(images)
        if validation_images is None and evaluate_batch is None:
            images, validation_images = split_validation(images, self.validation_share)
        levels = validate_levels(levels)
        started = time.perf_counter()
        evaluator = FitnessEvaluator(model, images, metric=self.metric, cache_bytes=self.cache_bytes)
        validator = None if validation_images is None else \
            FitnessEvaluator(model, validation_images, metric=self.metric, cache_bytes=0, batch_size=VALIDATION_BATCH)
        if evaluate_batch is None:
            evaluate_batch = lambda candidates: [evaluator(masks) for masks in candidates]  # noqa: E731
        genes = Chromosomes(model, evaluator.eligible, self.budget)
        # The greedy seed ranks on every image given (search and validation), as greedy-error does on
        # them: the seed is then greedy-error's own selection, which a winner must beat on validation.
        seeding = time.perf_counter()
        errors = layer_output_errors(model, images if validation_images is None
                                     else torch.cat([images, validation_images]))
        seeding = time.perf_counter() - seeding
        seed_harms = {"range": genes.range_harm,
                      "greedy-error": torch.cat([errors[n].to(HOST) for n in genes.names]) / genes.macs,
                      "random": torch.rand(len(genes.macs), generator=torch.Generator().manual_seed(self.seed),
                                           dtype=torch.float64, device=HOST)}
        validate = None if validator is None else (lambda flat: validator.per_image(genes.masks(flat)))
        run = _SearchRun(self, genes, evaluate_batch, seed_harms, levels, resume, on_generation, validate)
        added_per_level, fitness_per_level, generations_run, frozen = run.finish_levels()

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
            "generations": self.generations, "islands": self.islands, "generations_run": generations_run,
            "fitness": fitness_per_level, "calibration": len(images) + (0 if validator is None else len(validator.images)),
            "search_images": len(images), "validation_images": 0 if validator is None else len(validator.images),
            "acceptance_z": self.acceptance_z,
            "validation_fitness": [level.get("validation_fitness") for level in run.done],
            # each seed's validation fitness per level (None at 100% or without validation): what the
            # evolution gained over range, greedy-error and random on the photos that chose it
            "seed_validation_fitness": [level.get("seed_validation_fitness") for level in run.done],
            "candidates_scored": run.scored,
            **evaluator.stats(),
            # wall times: the only provenance that differs between two runs with one seed
            "timing": {"seconds": time.perf_counter() - started, "forward_seconds": evaluator.forward_seconds,
                       "seeding_seconds": seeding,
                       "validation_seconds": 0.0 if validator is None else validator.forward_seconds},
        }
        group_size = mixed_layers(model, eligible_only=True)[genes.names[0]].group_size
        return record_shifts(model, Selection(self.name, levels, group_size, selected, provenance))

    def _tournament(self, fitness: list[float], rng: random.Random) -> int:
        contenders = rng.sample(range(len(fitness)), min(self.tournament, len(fitness)))
        return min(contenders, key=lambda i: fitness[i])


class _SearchRun:
    """One evolutionary search over all levels, advanced generation by generation; its whole state
    (levels done, the level in progress, every island, the random generator) is a JSON dict."""

    def __init__(self, config: EvolutionarySelection, genes: Chromosomes, evaluate_batch: BatchEvaluator,
                 seed_harms: dict[str, torch.Tensor], levels: list[float], resume: dict | None,
                 on_generation: Callable[[dict], None] | None,
                 validate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.config, self.genes, self.evaluate_batch, self.validate = config, genes, evaluate_batch, validate
        self.seed_harms, self.levels, self.on_generation = seed_harms, levels, on_generation
        self.rng = random.Random(config.seed)
        self.done: list[dict] = []  # per finished level: added groups, fitness, generations run
        self.scored = 0
        self.level_state: dict | None = None
        if resume is not None:
            if resume.get("levels") != levels or resume.get("seed") != config.seed:
                raise ValueError("the resume state belongs to another search (levels or seed differ)")
            self.done = resume["done"]
            self.scored = resume["scored"]
            self.level_state = resume["level_state"]
            version, internal, gauss = resume["rng"]
            self.rng.setstate((version, tuple(internal), gauss))

    def state(self) -> dict:
        """A snapshot (a copy: the run goes on mutating its own lists)."""
        return copy.deepcopy({"levels": self.levels, "seed": self.config.seed, "done": self.done,
                              "scored": self.scored, "level_state": self.level_state,
                              "rng": list(self.rng.getstate())})

    def score(self, flats: list[torch.Tensor]) -> list[float]:
        self.scored += len(flats)
        return [float(f) for f in self.evaluate_batch([self.genes.masks(flat) for flat in flats])]

    def frozen(self) -> torch.Tensor:
        frozen = torch.zeros(len(self.genes.macs), dtype=torch.bool, device=HOST)
        for level in self.done:
            frozen |= _flat_from_text(level["added"])
        return frozen

    def finish_levels(self) -> tuple[list[torch.Tensor], list[float], list[int], torch.Tensor]:
        for ratio in self.levels[len(self.done):]:
            frozen = self.frozen()
            best, fitness, ran, validation, seed_validation = self._search_level(frozen, ratio)
            self.done.append({"added": _flat_to_text(best & ~frozen), "fitness": fitness, "generations": ran,
                              "validation_fitness": validation, "seed_validation_fitness": seed_validation})
            self.level_state = None
        added = [_flat_from_text(level["added"]) for level in self.done]
        return (added, [level["fitness"] for level in self.done], [level["generations"] for level in self.done],
                self.frozen())

    def _first_populations(self, frozen: torch.Tensor, ratio: float) -> list[list[torch.Tensor]]:
        config, genes = self.config, self.genes
        seeds = [genes.fill(frozen, harm, ratio) for harm in self.seed_harms.values()]
        islands = []
        for _ in range(config.islands):
            population = list(seeds)
            while len(population) < config.population:
                parent = seeds[len(population) % len(seeds)]
                child = genes.mutate(parent, frozen, self.rng.randint(1, 2 * config.mutation_swaps), self.rng)
                population.append(genes.repair(child, frozen, ratio, self.rng))
            islands.append(population)
        return islands

    def _search_level(self, frozen: torch.Tensor, ratio: float
                      ) -> tuple[torch.Tensor, float, int, float | None, dict[str, float] | None]:
        """(winner, its search fitness, generations run, its validation fitness or None, each seed's
        validation fitness or None)."""
        config, genes, rng = self.config, self.genes, self.rng
        if ratio >= 1:
            everything = torch.ones_like(frozen)
            return (everything, self.score([everything])[0], 0,
                    None if self.validate is None else float(self.validate(everything).mean()), None)
        if self.level_state is None:
            populations = self._first_populations(frozen, ratio)
            flat_fitness = self.score([flat for population in populations for flat in population])
            size = config.population
            fitnesses = [flat_fitness[i * size:(i + 1) * size] for i in range(config.islands)]
            generation, best_fitness, stalled = 0, min(flat_fitness), 0
            # The seeds (first members of an island) compete on validation; the best first candidate
            # must then beat the best seed there.
            validated, seed_validation = {}, None
            if self.validate is not None:
                seeds = populations[0][:len(self.seed_harms)]
                seed_validation = {name: float(self.validate(flat).mean()) for name, flat in zip(self.seed_harms, seeds)}
                validated = self._validated(seeds, populations, fitnesses, None, 0.0)
                leader = min(((f, flat) for population, fitness in zip(populations, fitnesses)
                              for flat, f in zip(population, fitness)), key=lambda pair: pair[0])[1]
                validated = self._validated([leader], populations, fitnesses, validated, config.acceptance_z)
        else:
            state = self.level_state
            populations = [[_flat_from_text(t) for t in island["population"]] for island in state["islands"]]
            fitnesses = [island["fitness"] for island in state["islands"]]
            generation, best_fitness, stalled = state["generation"], state["best"], state["stalled"]
            validated = state.get("validation") or {}
            seed_validation = state.get("seed_validation")
        bar = tqdm(total=config.generations, initial=generation, desc=f"evolution {ratio:.0%}",
                   disable=not config.progress, mininterval=1.0, leave=False)
        while generation < config.generations and stalled < config.patience:
            children_per_island, known = [], []
            for population, fitness in zip(populations, fitnesses):
                ranked = sorted(range(len(population)), key=lambda i: fitness[i])
                children = [population[i] for i in ranked[:config.elite]]
                known.append([fitness[i] for i in ranked[:config.elite]])
                while len(children) < config.population:
                    first = population[config._tournament(fitness, rng)]
                    if rng.random() < config.crossover_rate:
                        child = genes.crossover(first, population[config._tournament(fitness, rng)], rng)
                    else:
                        child = first
                    child = genes.mutate(child, frozen, rng.randint(1, config.mutation_swaps), rng)
                    children.append(genes.repair(child, frozen, ratio, rng))
                children_per_island.append(children)
            new = self.score([c for children in children_per_island for c in children[config.elite:]])
            fresh = config.population - config.elite
            populations = children_per_island
            fitnesses = [known[i] + new[i * fresh:(i + 1) * fresh] for i in range(config.islands)]
            generation += 1
            if config.islands > 1 and generation % config.migration_interval == 0:
                self._migrate(populations, fitnesses)
            generation_best = min(min(f) for f in fitnesses)
            if self.validate is not None:  # stop when the validation winner stalls, not the search fitness
                leader = min(((f, flat) for population, fitness in zip(populations, fitnesses)
                              for flat, f in zip(population, fitness)), key=lambda pair: pair[0])[1]
                improved = self._validated([leader], populations, fitnesses, validated, config.acceptance_z)
                stalled = 0 if improved["winner"] != validated.get("winner") else stalled + 1
                validated = improved
                best_fitness = min(best_fitness, generation_best)
            elif generation_best < best_fitness * (1 - 1e-9):
                best_fitness, stalled = generation_best, 0
            else:
                stalled += 1
            bar.update(1)
            bar.set_postfix(best=f"{best_fitness:.4g}", refresh=False)
            self.level_state = {"ratio": ratio, "generation": generation, "best": best_fitness, "stalled": stalled,
                                "islands": [{"population": [_flat_to_text(f) for f in population], "fitness": fitness}
                                            for population, fitness in zip(populations, fitnesses)],
                                "validation": validated or None, "seed_validation": seed_validation}
            if self.on_generation is not None:
                self.on_generation(self.state())
        bar.close()
        if validated:
            return (_flat_from_text(validated["winner"]), validated["fitness"], generation, validated["validation"],
                    seed_validation)
        candidates = [(f, flat) for population, fitness in zip(populations, fitnesses)
                      for flat, f in zip(population, fitness)]
        winner_fitness, winner = min(candidates, key=lambda pair: pair[0])
        return winner, winner_fitness, generation, None, seed_validation

    def _validated(self, contenders: list[torch.Tensor], populations, fitnesses, current: dict | None,
                   acceptance_z: float) -> dict:
        """The winner after `contenders` challenge `current` on the validation images, with its search
        fitness: a contender wins with a lower mean and, when `acceptance_z` > 0, a paired improvement
        of more than `acceptance_z` standard errors over the photos."""
        best = dict(current or {})
        search_fitness = {_flat_to_text(flat): f for population, fitness in zip(populations, fitnesses)
                          for flat, f in zip(population, fitness)}
        for flat in contenders:
            text = _flat_to_text(flat)
            if text == best.get("winner"):
                continue
            scores = self.validate(flat)
            if best:
                held = self.validate(_flat_from_text(best["winner"]))  # memoized: no second forward
                if not (float(scores.mean()) < float(held.mean()) * (1 - 1e-9)
                        and paired_improvement_z(held, scores) > acceptance_z):
                    continue
            best = {"winner": text, "validation": float(scores.mean()), "fitness": search_fitness[text]}
        return best

    @staticmethod
    def _migrate(populations: list[list[torch.Tensor]], fitnesses: list[list[float]]) -> None:
        """Ring migration: each island's best replaces the next island's worst."""
        bests = [min(range(len(f)), key=lambda i: f[i]) for f in fitnesses]
        moving = [(populations[i][b], fitnesses[i][b]) for i, b in enumerate(bests)]
        for i, (flat, fitness) in enumerate(moving):
            target = (i + 1) % len(populations)
            worst = max(range(len(fitnesses[target])), key=lambda j: fitnesses[target][j])
            populations[target][worst] = flat
            fitnesses[target][worst] = fitness
