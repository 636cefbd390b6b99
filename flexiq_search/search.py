"""The FlexiQ search study: Optuna outer trials, each one an evolutionary channel selection, its
accuracy at every level and its latency on every backend, stored as one result.

Where the work runs is an `Executor`: `LocalExecutor` (this process) here, `workers.RayExecutor`
on a Ray cluster; the search logic is the same. Everything a trial finishes is in the store, and
the evolution's state is checkpointed after every generation, so `run(resume=True)` after a
crash re-enters the unfinished trial at its last generation; the store's writes are idempotent,
so re-recorded points never duplicate rows. Optuna's NSGA-II keeps its own tables (RDB storage)
in the same database.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
import zlib
from typing import Callable, Protocol

import torch
from torch import nn

from .config import SearchConfig
from .data import fixed_subset, parse_dataset_spec
from .devices import AUTO, HOST, module_device, resolve_device
from .errors import FlexiqError
from .api import quantize
from .evaluation import PreparedModel, prepare_model
from .models import get_model_entry
from .quant.convert import set_ratio
from .selection import apply_selection
from .selection.evolution import BatchEvaluator, split_validation
from .selection.fitness import FitnessEvaluator
from .store.repository import (EVOLUTION_CHECKPOINT, evolution_progress,  # the store decodes it for progress
                               level_means, params_label)
from .training import accuracy



class Executor(Protocol):
    """Where a trial's heavy work runs. `device` is a `resolve_device` spec, resolved where the
    work runs (a driver without a GPU may drive actors on GPU nodes)."""

    def fitness_pool(self, qmodel: nn.Module, images: torch.Tensor, metric: str,
                     device: str = AUTO) -> tuple[BatchEvaluator, Callable]:
        """A batch evaluator of candidates for this model, and a function that releases it."""

    def latency(self, backend: str, qmodel: nn.Module, example: torch.Tensor, ratios: list[float],
                model_name: str) -> dict:
        """The backend's `measure` result (the `flexiq latency --json` contract)."""

    def finetune(self, qmodel: nn.Module, teacher: nn.Module, prepared: PreparedModel, config,
                 device: str = AUTO) -> dict:
        """Finetuned state dict of `qmodel` (QAT over all levels), on the host."""


def measure_latency(backend: str, qmodel: nn.Module, example: torch.Tensor, ratios: list[float],
                    model_name: str) -> dict:
    from .latency import create_backend

    if module_device(qmodel) != HOST:  # backends take host models (the gpu backend moves what it times)
        qmodel, example = copy.deepcopy(qmodel).to(HOST), example.to(HOST)
    return create_backend(backend).measure(qmodel, example, ratios, model_name)


def finetuned_state(qmodel: nn.Module, teacher: nn.Module, prepared: PreparedModel, config,
                    device: str = AUTO) -> dict:
    from .finetune import finetune

    target = resolve_device(device)
    finetune(qmodel.to(target), teacher.to(target), prepared.bundle, config, progress=False)
    return {key: value.to(HOST) for key, value in qmodel.state_dict().items()}


def driver_device(spec: str, log: Callable[[str], None]) -> torch.device:
    """Where the driver's own work (validation, evaluation) runs: `spec`, or the CPU when `spec`
    names a CUDA device this machine lacks (the cluster's GPU nodes still take actors and finetuning)."""
    if spec.startswith("cuda") and not torch.cuda.is_available():
        log(f"device {spec}: this driver has no CUDA; its validation and evaluation run on the CPU")
        return HOST
    return resolve_device(spec)


class LocalExecutor:
    """Everything in this process: no Ray needed (tests, one-off runs)."""

    def fitness_pool(self, qmodel, images, metric, device=AUTO):
        evaluator = FitnessEvaluator(qmodel, images, metric=metric, device=resolve_device(device))
        return (lambda candidates: [evaluator(masks) for masks in candidates]), (lambda: None)

    def latency(self, backend, qmodel, example, ratios, model_name):
        return measure_latency(backend, qmodel, example, ratios, model_name)

    def finetune(self, qmodel, teacher, prepared, config, device=AUTO):
        return finetuned_state(qmodel, teacher, prepared, config, device)


def _drawn(params: dict) -> str:
    """What a trial drew from the search space, as its log line says it."""
    return f"params {params_label(params)}" if params else "the config's own values (nothing to draw)"


def check_search_inputs(config: SearchConfig) -> None:
    """Fail before any work or any write on names that cannot run (one clear line each)."""
    from .latency import create_backend

    entry = get_model_entry(config.model)
    parse_dataset_spec(config.dataset)
    if config.calibration_data:
        parse_dataset_spec(config.calibration_data)
    for backend in config.backends:
        create_backend(backend)  # unknown: FlexiqError; cannot run here: BackendUnavailable
    if config.checkpoint and config.weights:
        raise FlexiqError("give checkpoint or weights, not both")
    for kind, path in (("checkpoint", config.checkpoint), ("weights", config.weights)):
        if path and not os.path.isfile(path):
            raise FlexiqError(f"{kind} {path} does not exist")
    if config.checkpoint:  # read now: a truncated, foreign or pickled file must not leave a failed study
        from .finetune import QUANTIZED_FORMAT
        from .models.checkpoint import CHECKPOINT_FORMAT, check_model_name, read_checkpoint

        payload = read_checkpoint(config.checkpoint, formats=(CHECKPOINT_FORMAT, QUANTIZED_FORMAT))
        check_model_name(config.checkpoint, payload, config.model)
    if not config.checkpoint and not config.weights:
        from .models.sources import cached_timm_weights

        if entry.pretrained_source is None:
            raise FlexiqError(f"no offline pretrained weights for {config.model!r}; train one and give its checkpoint")
        if entry.source == "timm" and cached_timm_weights(config.model) is None:
            raise FlexiqError(f"no weights for timm model {config.model!r} in the local cache; give weights (--weights)")


class SearchRunner:
    """Runs (or resumes) one study into a `Repository`."""

    HEARTBEAT_SECONDS = 10.0

    def __init__(self, config: SearchConfig, repo, storage_url: str, executor: Executor | None = None,
                 log: Callable[[str], None] = print, submission_id: str | None = None,
                 store_label: str | None = None) -> None:
        """`store_label`: how the log names the store (a URL without its password)."""
        self.config, self.repo, self.storage_url = config, repo, storage_url
        self.store_label = store_label
        self.executor = executor or LocalExecutor()
        self.log = log
        self.submission_id = submission_id or f"local-{os.getpid()}-{int(time.time())}"
        self.job_id: int | None = None
        self._last_heartbeat = 0.0

    # --- the study -----------------------------------------------------------------------
    def run(self, resume: bool = False) -> int:
        import optuna

        config = self.config
        check_search_inputs(config)
        stored = self.repo.get_study(config.study_name)
        if stored is not None and not resume:
            raise FlexiqError(f"study {config.study_name!r} already exists ({stored['status']}); "
                              "pass --resume to continue it or --name for a new one")
        if stored is None and resume:
            raise FlexiqError(f"no study named {config.study_name!r} to resume")
        if isinstance(self.executor, LocalExecutor):
            resolve_device(config.device)  # everything runs here: the device must exist here
        # The model on its data before any write: one that cannot run there leaves no failed study behind.
        prepared = prepare_model(config.model, config.dataset, config.checkpoint, weights=config.weights,
                                 device=driver_device(config.device, self.log),
                                 calibration_data=config.calibration_data, calibration_share=config.calibration_share)
        if self.store_label:  # said once the inputs proved runnable: a bad input is the only line
            self.log(f"study {config.study_name!r} in {self.store_label}")
        if stored is None:
            study_id = self.repo.create_study(config.study_name, config.model, config.dataset,
                                              storable_config(config), list(config.backends))
        else:
            study_id = stored["id"]
            self.repo.set_study_status(study_id, "running")
        self.job_id = self.repo.start_job(self.submission_id, study_id)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:  # from here on, whatever stops the search marks the study and the job failed
            with self.repo.schema_lock():  # Optuna creates its tables on first use: one driver at a time
                study = optuna.create_study(study_name=f"flexiq:{config.study_name}", storage=self.storage_url,
                                            directions=["maximize", "minimize"], load_if_exists=True,
                                            sampler=optuna.samplers.NSGAIISampler(seed=config.seed))
            trials = {t["number"]: t for t in self.repo.list_trials(study_id)}
            for number in range(config.trials):
                known = trials.get(number)
                if known is not None and known["status"] == "complete":
                    continue
                if known is None:
                    if number == 0:  # the config's own values first
                        study.enqueue_trial(_own_values(config), skip_if_exists=True)
                    optuna_trial = study.ask(_distributions(config))
                    trial_id = self.repo.create_trial(study_id, number, optuna_trial.params, optuna_trial.number)
                    params, optuna_number = optuna_trial.params, optuna_trial.number
                    self.log(f"trial {number}: {_drawn(params)}")
                else:
                    trial_id, params, optuna_number = known["id"], known["params"], known["optuna_trial_number"]
                    self.log(f"resuming trial {number}: {_drawn(params)}")
                values = self.run_trial(dataclasses.replace(config, **params), prepared, trial_id, number)
                if study.trials[optuna_number].state == optuna.trial.TrialState.RUNNING:
                    study.tell(optuna_number, values)
                self.repo.finish_trial(trial_id, "complete")
                self.repo.update_pareto(study_id)
        except BaseException:
            self.repo.set_study_status(study_id, "failed")
            self.repo.finish_job(self.job_id, "failed")
            raise
        self.repo.set_study_status(study_id, "finished")
        self.repo.finish_job(self.job_id, "succeeded")
        return study_id

    def heartbeat(self) -> None:
        """Tell the store this job is alive (throttled): a stale heartbeat marks a dead driver."""
        now = time.monotonic()
        if self.job_id is not None and now - self._last_heartbeat >= self.HEARTBEAT_SECONDS:
            self.repo.heartbeat(self.job_id)
            self._last_heartbeat = now

    # --- one trial ---------------------------------------------------------------------------
    def run_trial(self, config: SearchConfig, prepared: PreparedModel, trial_id: int, number: int) -> list[float]:
        """Select, (finetune), evaluate and measure one configuration; store it as one result."""
        levels = sorted(float(r) for r in config.ratios)
        quant = config.quant_config()
        flexiq = quantize(prepared.model, prepared.bundle, quant, samples=config.calibration)
        qmodel, images = flexiq.quantized, flexiq.calibration_images
        strategy = config.evolution()
        stored = self.repo.load_checkpoint(trial_id, EVOLUTION_CHECKPOINT)
        resume = json.loads(zlib.decompress(stored)) if stored else None
        progress = _Progress(self.log, number, len([r for r in levels if r < 1]) * config.generations, resume)

        def on_generation(state: dict) -> None:
            self.repo.save_checkpoint(trial_id, EVOLUTION_CHECKPOINT, zlib.compress(json.dumps(state).encode()))
            progress.update(state)
            self.heartbeat()

        # Workers score candidates on the search images; the driver picks winners on the held-out rest.
        search_images, validation_images = split_validation(images, strategy.validation_share)
        evaluate_batch, release = self.executor.fitness_pool(qmodel, search_images, config.metric, config.device)
        try:
            selection = strategy.select(qmodel, levels, search_images, validation_images=validation_images,
                                        evaluate_batch=evaluate_batch, resume=resume, on_generation=on_generation)
        finally:
            release()
        apply_selection(qmodel, selection)
        if config.finetune_epochs:
            from .finetune import FinetuneConfig

            tune = FinetuneConfig(epochs=config.finetune_epochs, lr=config.finetune_lr,
                                  train_samples=config.finetune_samples, seed=config.seed)
            qmodel.load_state_dict(self.executor.finetune(qmodel, prepared.model, prepared, tune, config.device))
        evaluations = self._evaluate(qmodel, prepared, config, [0.0] + levels, selection.provenance["fitness"])
        latencies = []
        for backend in config.backends:
            result = self.executor.latency(backend, qmodel, images[:1], [0.0] + levels, config.model)
            latencies += [{"backend": backend, "provenance": result["provenance"], "hardware": result["hardware"],
                           "ratio": row["ratio"], "latency_us": row["latency_us"], "cycles": row["cycles"],
                           "speedup_vs_int8": row["speedup_vs_int8"], "layers": row["layers"]}
                          for row in result["ratios"]]
        self.repo.add_result(trial_id, selection, evaluations, latencies)
        top1, latency = level_means(evaluations, latencies, config.backends[0])
        self.log(f"trial {number}: mean top-1 {top1:.2f}% over levels, mean latency {latency:.1f} us on "
                 f"{config.backends[0]}")
        return [top1, latency]

    def _evaluate(self, qmodel: nn.Module, prepared: PreparedModel, config: SearchConfig, ratios: list[float],
                  fitness_per_level: list[float]) -> list[dict]:
        test = fixed_subset(prepared.bundle.test, config.eval_samples)
        fitness = dict(zip(ratios[1:], fitness_per_level))
        rows = []
        for ratio in ratios:
            set_ratio(qmodel, ratio)
            top1, top5 = accuracy(qmodel, test, num_classes=prepared.bundle.num_classes, progress=False)
            rows.append({"ratio": ratio, "top1": top1, "top5": top5, "fitness": fitness.get(ratio, 0.0),
                         "dataset": prepared.bundle.name, "samples": len(test)})
        set_ratio(qmodel, 0)
        return rows


class _Progress:
    """Periodic progress lines: generation, best fitness, ETA for the trial."""

    def __init__(self, log: Callable[[str], None], number: int, total_generations: int, resume: dict | None) -> None:
        self.log, self.number, self.total = log, number, max(total_generations, 1)
        self.started, self.last = time.monotonic(), 0.0
        self.first = evolution_progress(resume)["generations_done"] or 0

    def update(self, state: dict) -> None:
        where = evolution_progress(state)  # the same reading of the state as the dashboard's
        done = where["generations_done"]
        now = time.monotonic()
        if now - self.last < 2.0 and done < self.total:
            return
        self.last = now
        rate = (done - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        self.log(f"trial {self.number}: generation {done}/{self.total} (level {where['level_ratio']:.0%}), "
                 f"best fitness {where['best_fitness']:.4g}, {where['scored']} candidates scored, ETA {eta:.0f} s")


def storable_config(config: SearchConfig) -> dict:
    """The versioned envelope of `config` as the store keeps it (studies, schedules)."""
    from .config import config_to_dict

    data = config_to_dict(config)
    data["_data"] = json.loads(json.dumps(data["_data"]))  # tuples -> lists: what JSON stores
    return data


def _distributions(config: SearchConfig) -> dict:
    from optuna.distributions import CategoricalDistribution

    return {key: CategoricalDistribution(list(choices)) for key, choices in sorted(config.search_space.items())}


def _own_values(config: SearchConfig) -> dict:
    """The config's own values of the searched keys (where the search space allows them)."""
    return {key: getattr(config, key) for key, choices in config.search_space.items() if getattr(config, key) in choices}


def load_search_config(path: str | None, overrides: dict) -> SearchConfig:
    """A validated config from a YAML file (optional) with command-line values on top."""
    import yaml

    data: dict = {}
    if path:
        try:
            with open(path) as handle:
                loaded = yaml.safe_load(handle)
        except OSError as exc:
            raise FlexiqError(f"cannot read search config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise FlexiqError(f"search config {path} is not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise FlexiqError(f"search config {path} must be a mapping of keys to values")
        data.update(loaded or {})
    data.update({key: value for key, value in overrides.items() if value is not None})
    known = {field.name for field in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise FlexiqError(f"search config: unknown key(s) {', '.join(unknown)}")
    for key in ("model", "dataset"):
        if not data.get(key):
            raise FlexiqError(f"search config: {key!r} is required")
    for key in ("backends", "ratios"):
        if isinstance(data.get(key), str):
            data[key] = [part.strip() for part in data[key].split(",") if part.strip()]
        if key in data:
            data[key] = tuple(data[key]) if isinstance(data[key], (list, tuple)) else data[key]
    try:
        return SearchConfig(**data)
    except (TypeError, ValueError) as exc:
        raise FlexiqError(f"search config: {exc}") from None
