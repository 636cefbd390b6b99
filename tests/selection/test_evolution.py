"""The evolutionary search: exact cached fitness, never worse than its seeds, nested levels."""

import copy

import pytest
import torch

from flexiq_search.quant.convert import mac_share_4bit, set_ratio
from flexiq_search.selection import apply_selection, create_strategy
from flexiq_search.selection.fitness import FitnessEvaluator, current_masks, logit_distance, paired_improvement_z


def random_masks(evaluator, generator, p=0.5):
    layers = dict(zip(evaluator.order, evaluator.layers))
    return {name: torch.rand(layers[name].n_groups, generator=generator) < p for name in evaluator.eligible}


def test_cached_fitness_equals_uncached_and_saves_layer_computes(converted, images):
    cached = FitnessEvaluator(converted, images, cache_bytes=1 << 30)
    plain = FitnessEvaluator(converted, images, cache_bytes=0)
    generator = torch.Generator().manual_seed(0)
    parent = random_masks(cached, generator)
    candidates = [parent]
    for layer_name in cached.eligible[len(cached.eligible) // 2:]:  # children differing from the middle on
        child = dict(parent)
        child[layer_name] = ~parent[layer_name]
        candidates.append(child)
    for masks in candidates:
        assert cached(masks) == plain(masks)
    assert cached.layer_computes < 0.8 * plain.layer_computes
    assert plain.layer_computes == plain.layer_calls


def test_fitness_of_the_int8_model_is_zero_and_grows_with_the_ratio(converted, images):
    evaluator = FitnessEvaluator(converted, images)
    layers = dict(zip(evaluator.order, evaluator.layers))
    none = {name: torch.zeros(layers[name].n_groups, dtype=torch.bool) for name in evaluator.eligible}
    every = {name: ~mask for name, mask in none.items()}
    assert evaluator(none) == 0.0
    assert evaluator(every) > 0
    assert logit_distance(evaluator.reference, evaluator.reference, "kl") == pytest.approx(0, abs=1e-12)


def test_evolution_is_never_worse_than_its_seeds_on_calibration(converted, images):
    levels = [0.25, 0.5, 0.75]
    selection = create_strategy("evolution", population=8, generations=4, seed=1, metric="mse",
                                validation_share=0).select(converted, levels, images)
    model = copy.deepcopy(converted)
    evaluator = FitnessEvaluator(model, images)
    for method in ("range", "greedy-error"):
        baseline = create_strategy(method).select(model, levels, images)
        apply_selection(model, baseline)
        set_ratio(model, levels[0])
        assert selection.provenance["fitness"][0] <= evaluator(current_masks(model)) * (1 + 1e-9), method
    apply_selection(model, selection)
    shares = []
    for ratio in levels:
        set_ratio(model, ratio)
        shares.append(mac_share_4bit(model))
    assert shares == sorted(shares) and abs(shares[1] - 0.5) < 0.1
    assert selection.provenance["evaluations"] > 0 and len(selection.provenance["fitness"]) == len(levels)


def test_winners_are_chosen_on_held_out_images_and_never_lose_to_the_seeds_there(converted, digits_batches):
    """Candidates are scored on one set; the winner of a level is the best on a separate validation set."""
    search, validation = digits_batches
    levels = [0.25, 0.5]
    selection = create_strategy("evolution", population=8, generations=4, seed=1).select(
        converted, levels, search, validation_images=validation)
    provenance = selection.provenance
    assert provenance["search_images"] == len(search) and provenance["validation_images"] == len(validation)
    assert len(provenance["validation_fitness"]) == len(levels) and len(provenance["fitness"]) == len(levels)
    model = copy.deepcopy(converted)
    on_validation = FitnessEvaluator(model, validation, metric="kl")  # the search's default fitness
    on_search = FitnessEvaluator(model, search, metric="kl")
    apply_selection(model, selection)
    for index, ratio in enumerate(levels):  # both reported fitnesses are the winner's, on their own sets
        set_ratio(model, ratio)
        assert provenance["validation_fitness"][index] == pytest.approx(on_validation(current_masks(model)))
        assert provenance["fitness"][index] == pytest.approx(on_search(current_masks(model)))
    # The seeds of the first level: range, and greedy-error as that strategy selects on every image the
    # evolution was given (search and validation), so the evolution never loses to greedy-error there.
    given = torch.cat([search, validation])
    for method in ("range", "greedy-error"):
        apply_selection(model, create_strategy(method).select(model, levels, given))
        set_ratio(model, levels[0])
        assert provenance["validation_fitness"][0] <= on_validation(current_masks(model)) * (1 + 1e-9), method
    # without explicit validation images, the last quarter of the images validates
    split = create_strategy("evolution", population=4, generations=1).select(converted, [0.5], search)
    assert (split.provenance["search_images"], split.provenance["validation_images"]) == (48, 16)
    with pytest.raises(ValueError, match="validation share"):
        create_strategy("evolution", validation_share=1.0)


def test_per_image_distances_average_to_the_fitness_in_chunks_or_whole(converted, images):
    whole = FitnessEvaluator(converted, images, metric="kl", cache_bytes=0)
    chunked = FitnessEvaluator(converted, images, metric="kl", cache_bytes=0, batch_size=7)
    masks = random_masks(whole, torch.Generator().manual_seed(2))
    per_image = whole.per_image(masks)
    assert per_image.shape == (len(images),) and bool((per_image >= 0).all())
    assert whole(masks) == pytest.approx(float(per_image.mean()))
    assert torch.allclose(chunked.per_image(masks), per_image, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="cache"):
        FitnessEvaluator(converted, images, batch_size=8)


def test_paired_improvement_is_the_mean_gain_in_standard_errors():
    current = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert paired_improvement_z(current, current - 0.5) == float("inf")  # lower on every photo alike
    assert paired_improvement_z(current, current) == 0.0
    contender = torch.tensor([0.0, 2.5, 2.0, 4.5])  # gains 1, -0.5, 1, -0.5: mean 0.25, sd 0.866
    assert paired_improvement_z(current, contender) == pytest.approx(0.25 / (0.8660254 / 2), rel=1e-6)
    assert paired_improvement_z(contender, current) == pytest.approx(-0.25 / (0.8660254 / 2), rel=1e-6)


def test_an_evolved_winner_must_beat_the_best_seed_by_the_acceptance_margin(converted, digits_batches):
    """With an unreachable margin the winner of the first level is the best seed on validation; with
    none (any lower mean wins) it can only be as good or better there."""
    search, validation = digits_batches
    runs = {z: create_strategy("evolution", population=8, generations=3, seed=1, acceptance_z=z).select(
        converted, [0.5], search, validation_images=validation) for z in (0.0, 1e9)}
    model = copy.deepcopy(converted)
    on_validation = FitnessEvaluator(model, validation, metric="kl")
    apply_selection(model, create_strategy("greedy-error").select(model, [0.5], torch.cat([search, validation])))
    set_ratio(model, 0.5)
    strict, free = runs[1e9].provenance, runs[0.0].provenance
    seeds = strict["seed_validation_fitness"][0]
    assert seeds == free["seed_validation_fitness"][0] and set(seeds) == {"range", "greedy-error", "random"}
    assert seeds["greedy-error"] == pytest.approx(on_validation(current_masks(model)))  # greedy-error's own
    assert strict["acceptance_z"] == 1e9
    assert strict["validation_fitness"][0] == min(seeds.values())  # no evolved candidate got in
    assert free["validation_fitness"][0] < min(seeds.values())  # here the search found a better one
    with pytest.raises(ValueError, match="acceptance_z"):
        create_strategy("evolution", acceptance_z=-1)


def test_kl_metric_and_bad_options(converted, images):
    selection = create_strategy("evolution", population=4, generations=1, metric="kl").select(converted, [0.5], images)
    assert selection.provenance["metric"] == "kl"
    with pytest.raises(ValueError):
        create_strategy("evolution", metric="l1")
    with pytest.raises(Exception, match="calibration images"):
        create_strategy("evolution").select(converted, [0.5])


def small_search(**options):
    return create_strategy("evolution", seed=3, population=6, generations=4, patience=10, **options)


def test_a_search_resumed_from_any_generation_ends_exactly_like_an_uninterrupted_one(converted, images):
    """The JSON state after a generation (what the driver stores) is enough to continue the search."""
    states = []
    whole = small_search().select(converted, [0.25, 0.5], images, on_generation=states.append)
    assert len(states) == 8  # 4 generations x 2 levels, patience never hit
    for state in (states[1], states[5]):  # inside the first level; inside the second
        import json

        restored = json.loads(json.dumps(state))  # exactly what survives the database
        resumed = small_search().select(converted, [0.25, 0.5], images, resume=restored)
        assert resumed.layers == whole.layers
        assert resumed.provenance["candidates_scored"] == whole.provenance["candidates_scored"]


def test_islands_score_every_generation_in_one_batch(converted, images):
    batches = []
    evaluator = FitnessEvaluator(converted, images)

    def evaluate_batch(candidates):
        batches.append(len(candidates))
        return [evaluator(masks) for masks in candidates]

    selection = small_search(islands=3, migration_interval=2).select(converted, [0.5], images,
                                                                     evaluate_batch=evaluate_batch)
    assert batches[0] == 3 * 6 and batches[1:] == [3 * (6 - 2)] * 4  # first populations, then non-elite children
    assert selection.provenance["candidates_scored"] == sum(batches)
    apply_selection(converted, selection)
    set_ratio(converted, 0.5)
    assert abs(mac_share_4bit(converted) - 0.5) < 0.1
    set_ratio(converted, 0)


def test_resume_state_of_another_search_is_refused(converted, images):
    states = []
    small_search().select(converted, [0.5], images, on_generation=states.append)
    with pytest.raises(ValueError, match="another search"):
        small_search().select(converted, [0.25, 0.5], images, resume=states[0])


def test_the_greedy_seed_is_greedy_errors_selection_on_every_image_given(converted, digits_batches):
    """The seed a winner must beat on validation is what `greedy-error` selects from the same images."""
    search, validation = digits_batches
    evaluator = FitnessEvaluator(converted, search)
    batches = []

    def evaluate_batch(candidates):
        batches.append(candidates)
        return [evaluator(masks) for masks in candidates]

    create_strategy("evolution", population=4, generations=0).select(
        converted, [0.25], search, validation_images=validation, evaluate_batch=evaluate_batch)
    greedy_seed = batches[0][1]  # the first population: range, greedy-error, random, then mutants
    model = copy.deepcopy(converted)
    apply_selection(model, create_strategy("greedy-error").select(model, [0.25], torch.cat([search, validation])))
    set_ratio(model, 0.25)
    expected = current_masks(model)
    assert all(torch.equal(greedy_seed[name], expected[name]) for name in greedy_seed)
