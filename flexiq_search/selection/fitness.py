"""End-to-end fitness of a candidate 4-bit assignment, with a layer-prefix activation cache.

Fitness is the distance of the mixed model's logits to the INT8 model's logits on calibration
images (lower is better), so an error that grows through later layers counts (method.md, "Search").

Most candidates of an evolutionary search differ from an already evaluated one only from some
layer on. Each layer's output is cached under a key that hashes the 4-bit masks of that layer and
of every layer executed before it; a layer whose key is cached returns the stored output without
computing (`MixedPrecisionLayer.replay_output`). Execution order is a topological order of the
forward pass, so a replayed output is exactly what the layer would compute. The cache is an LRU
bounded in bytes; `cache_bytes=0` turns it off (for measuring what it saves).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import HOST, module_device
from ..quant.convert import mixed_layers

FITNESS_METRICS = ("mse", "kl")


def per_image_distance(logits: torch.Tensor, reference: torch.Tensor, metric: str) -> torch.Tensor:
    """[N] float64: each image's logit MSE, or KL(reference || candidate) of its softmax distributions.
    Per image, so that two candidates can be compared photo by photo (a paired test)."""
    if metric == "mse":
        return (logits - reference).double().square().flatten(1).mean(1)
    if metric == "kl":
        return F.kl_div(F.log_softmax(logits.double(), 1), F.log_softmax(reference.double(), 1),
                        log_target=True, reduction="none").sum(1)
    raise ValueError(f"unknown fitness metric {metric!r}; expected one of {FITNESS_METRICS}")


def logit_distance(logits: torch.Tensor, reference: torch.Tensor, metric: str) -> float:
    """The fitness: `per_image_distance` averaged over the images."""
    return float(per_image_distance(logits, reference, metric).mean())


def paired_improvement_z(current: torch.Tensor, contender: torch.Tensor) -> float:
    """How many standard errors the contender's per-image distances are below the current's on
    average (a paired z statistic over the same images; inf when it is lower on every image alike)."""
    gain = (current - contender).double()
    mean = float(gain.mean())
    if len(gain) < 2 or mean == 0:
        return 0.0
    error = float(gain.std()) / len(gain) ** 0.5
    return mean / error if error > 0 else float("inf") if mean > 0 else float("-inf")


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The 4-bit group masks the model's eligible layers run at its current ratio (a candidate)."""
    return {name: layer.low_bit_groups().to(HOST) for name, layer in mixed_layers(model, eligible_only=True).items()}


class FitnessEvaluator:
    """Scores {eligible layer name: [G] bool 4-bit mask} candidates against the INT8 logits."""

    def __init__(self, model: nn.Module, images: torch.Tensor, *, metric: str = "mse",
                 cache_bytes: int = 1 << 30, batch_size: int | None = None,
                 device: torch.device | None = None) -> None:
        """`batch_size` runs the images in chunks (bounds the memory of a large validation set); the
        prefix cache holds whole-set activations, so chunking needs `cache_bytes=0`. Forwards run
        on `device` (default: where the model lives); distances come back to the host."""
        if metric not in FITNESS_METRICS:
            raise ValueError(f"unknown fitness metric {metric!r}; expected one of {FITNESS_METRICS}")
        if batch_size is not None and cache_bytes > 0:
            raise ValueError("a chunked FitnessEvaluator (batch_size) cannot use the prefix cache (cache_bytes=0)")
        self.batch_size = batch_size
        self.model = copy.deepcopy(model).eval()  # candidates rewrite group orders: never the caller's
        if device is not None:
            self.model.to(device)
        self.images = images.to(module_device(self.model))
        self.metric = metric
        self.cache_bytes = cache_bytes
        self.cache: "OrderedDict[bytes, torch.Tensor]" = OrderedDict()
        self.cached_bytes = 0
        self.evaluations = 0  # forward passes run
        self.layer_calls = 0  # layer forwards requested by those passes
        self.layer_computes = 0  # of which actually computed (the rest replayed from the cache)
        self.forward_seconds = 0.0  # wall time inside model forwards (the rest of a search is bookkeeping)
        self._memo: dict[bytes, torch.Tensor] = {}
        layers = mixed_layers(self.model)
        order: list[str] = []
        hooks = [layer.register_forward_pre_hook(lambda _m, _i, name=name: order.append(name))
                 for name, layer in layers.items()]
        for layer in layers.values():
            layer.set_ratio(0)
        with torch.no_grad():
            self.reference = self._forward()
        for hook in hooks:
            hook.remove()
        self.order = list(dict.fromkeys(order))  # execution order, each layer once
        self.layers = [layers[name] for name in self.order]
        self.eligible = [name for name in self.order if layers[name].eligible]
        self._pending: dict[int, bytes] = {}
        for index, layer in enumerate(self.layers):
            layer.register_forward_hook(lambda _m, _i, out, index=index: self._record(index, out))

    def _record(self, index: int, output: torch.Tensor):
        key = self._pending.pop(index, None)
        if key is None:
            return None
        stored = output.detach().clone()  # later ops may work in place on the returned tensor
        self.cache[key] = stored
        self.cached_bytes += stored.numel() * stored.element_size()
        while self.cached_bytes > self.cache_bytes and self.cache:
            _, dropped = self.cache.popitem(last=False)
            self.cached_bytes -= dropped.numel() * dropped.element_size()
        return None

    def prefix_keys(self, masks: dict[str, torch.Tensor]) -> list[bytes]:
        """One key per layer in execution order: a hash of its mask and all earlier layers' masks."""
        keys, digest = [], hashlib.blake2b(digest_size=16)
        for name in self.order:
            mask = masks.get(name)
            digest.update(b"-" if mask is None else mask.to(torch.uint8).numpy().tobytes())
            digest.update(b"|")
            keys.append(digest.copy().digest())
        return keys

    def _forward(self) -> torch.Tensor:
        if self.batch_size is None:
            return self.model(self.images)
        return torch.cat([self.model(chunk) for chunk in self.images.split(self.batch_size)])

    def __call__(self, masks: dict[str, torch.Tensor]) -> float:
        """The candidate's fitness: its mean distance to the INT8 logits."""
        return float(self.per_image(masks).mean())

    @torch.no_grad()
    def per_image(self, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N] distances of the candidate's logits to the INT8 logits, one per image (memoized)."""
        keys = self.prefix_keys(masks)
        if keys[-1] in self._memo:
            return self._memo[keys[-1]]
        try:
            for index, (name, layer, key) in enumerate(zip(self.order, self.layers, keys)):
                self.layer_calls += 1
                cached = self.cache.get(key)
                if cached is not None:
                    self.cache.move_to_end(key)
                    layer.replay_output = cached.clone()
                    continue
                self.layer_computes += 1
                if name in masks:
                    layer.set_low_bit_groups(masks[name])
                if self.cache_bytes > 0:
                    self._pending[index] = key
            started = time.perf_counter()
            logits = self._forward()
            self.forward_seconds += time.perf_counter() - started
        finally:
            self._pending.clear()
            for layer in self.layers:
                layer.replay_output = None
        self.evaluations += 1
        distances = per_image_distance(logits, self.reference, self.metric).to(HOST)
        self._memo[keys[-1]] = distances
        return distances

    def stats(self) -> dict:
        return {"evaluations": self.evaluations, "layer_calls": self.layer_calls,
                "layer_computes": self.layer_computes, "cache_mib": self.cached_bytes / 2**20}
