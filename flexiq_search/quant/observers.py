"""Calibration observers: they watch a layer's float inputs and fix its INT8 activation scale.

One scale per tensor (method.md); the observers also keep per-channel statistics (absolute max,
mean square) that extraction shifts and the range-based selection need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..devices import HOST
from ..registry import Registry
from .arithmetic import int8_range

OBSERVERS = Registry("observer", error=ValueError)
register_observer = OBSERVERS.register


def create_observer(name: str, **kwargs) -> "ActivationObserver":
    return OBSERVERS.create(name, **kwargs)


@dataclass(frozen=True)
class ActivationQuantParams:
    """What calibration decided for one layer input."""

    scale: float
    signed: bool
    channel_absmax: torch.Tensor  # [C] float, largest |x| seen per input channel
    channel_mean_square: torch.Tensor  # [C] float, E[x^2] per input channel


class ActivationObserver:
    """Base observer: tracks min, per-channel |max| and mean square; subclasses choose the clip value.

    Life cycle: `update(x, channel_dim)` on every calibration batch, then `params()` once.
    """

    def __init__(self) -> None:
        self.min_value = float("inf")
        self.channel_absmax: torch.Tensor | None = None
        self.channel_sum_square: torch.Tensor | None = None
        self.count = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor, channel_dim: int) -> None:
        x = x.detach().float()
        per_channel = x.movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1)
        absmax = per_channel.abs().amax(dim=1)
        sum_square = per_channel.square().sum(dim=1, dtype=torch.float64)
        if self.channel_absmax is None:
            self.channel_absmax, self.channel_sum_square = absmax, sum_square
        else:
            self.channel_absmax = torch.maximum(self.channel_absmax, absmax)
            self.channel_sum_square += sum_square
        self.count += per_channel.shape[1]
        self.min_value = min(self.min_value, float(x.min()))
        self._update_clip(x)

    def _update_clip(self, x: torch.Tensor) -> None:
        """Subclasses track the tensor's clip magnitude here."""

    def clip_value(self) -> float:
        raise NotImplementedError

    def params(self) -> ActivationQuantParams:
        if self.channel_absmax is None:
            raise RuntimeError("observer saw no calibration data")
        signed = self.min_value < 0
        clip = self.clip_value()
        high = int8_range(signed)[1]
        scale = clip / high if clip > 0 else 1.0
        return ActivationQuantParams(
            scale=float(scale),
            signed=bool(signed),
            channel_absmax=self.channel_absmax.clone(),
            channel_mean_square=(self.channel_sum_square / max(self.count, 1)).float(),
        )


@register_observer("minmax")
class MinMaxObserver(ActivationObserver):
    """Clip at the largest magnitude seen: no value saturates, small values get coarse steps."""

    def clip_value(self) -> float:
        return float(self.channel_absmax.max())


@register_observer("percentile")
class PercentileObserver(ActivationObserver):
    """Clip at a high percentile of |x| (mean over batches): rare outliers saturate, steps shrink."""

    def __init__(self, percentile: float = 99.99, max_samples: int = 1 << 20) -> None:
        super().__init__()
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile
        self.max_samples = max_samples
        self._clips: list[float] = []
        self._generator = torch.Generator().manual_seed(0)

    def _update_clip(self, x: torch.Tensor) -> None:
        flat = x.abs().flatten()
        if flat.numel() > self.max_samples:
            # seeded on the host, so the same values are sampled on any device
            idx = torch.randint(flat.numel(), (self.max_samples,), generator=self._generator, device=HOST)
            flat = flat[idx]
        self._clips.append(float(torch.quantile(flat, self.percentile / 100.0)))

    def clip_value(self) -> float:
        return sum(self._clips) / len(self._clips)


@register_observer("mse")
class MSEObserver(ActivationObserver):
    """Clip where the INT8 quantization error (rounding plus saturation) of the observed values is
    smallest: searched over `candidates` clips between their 99th percentile and their maximum.

    Values are kept as a seeded sample (`samples_per_batch` per batch), so memory stays bounded.
    """

    def __init__(self, candidates: int = 100, samples_per_batch: int = 1 << 18) -> None:
        super().__init__()
        if candidates < 2:
            raise ValueError(f"candidates must be at least 2, got {candidates}")
        self.candidates = candidates
        self.samples_per_batch = samples_per_batch
        self._samples: list[torch.Tensor] = []
        self._generator = torch.Generator().manual_seed(0)

    def _update_clip(self, x: torch.Tensor) -> None:
        flat = x.abs().flatten()
        if flat.numel() > self.samples_per_batch:
            flat = flat[torch.randint(flat.numel(), (self.samples_per_batch,), generator=self._generator, device=HOST)]
        self._samples.append(flat)

    def clip_value(self) -> float:
        values = torch.cat(self._samples).double()
        top = float(self.channel_absmax.max())
        if top <= 0:
            return 0.0
        high = int8_range(self.min_value < 0)[1]
        low = min(float(torch.quantile(values[: 1 << 24].float(), 0.99)), top)
        clips = torch.linspace(max(low, top / self.candidates), top, self.candidates, dtype=torch.float64, device=HOST)
        errors = [float((values - (values / (c / high)).round().clamp(max=high) * (c / high)).square().mean())
                  for c in clips]
        return float(clips[min(range(len(errors)), key=errors.__getitem__)])
