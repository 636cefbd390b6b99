"""FlexiQ mixed-precision Conv2d and Linear.

A layer stores its INT8 weight codes once. Its input channels are split into groups of
`group_size`; a per-layer channel order ranks the groups, and each ratio level owns one boundary
index into that order: the first `boundary` groups run in 4-bit, extracted from the INT8 codes
(`arithmetic.lowered_codes`), the rest in INT8. `set_ratio` only moves that index.

Life cycle: built from a float layer in the *calibrating* state (float forward, observing its
input), then `freeze()` quantizes the weights and fixes scales and shifts for good.

The forward computes the integer accumulator of method.md exactly: integer-valued operands in
float32 when the layer's worst-case partial sum is provably below 2^24 (so every float32 sum is
exact), float64 otherwise; then one dequantization per output channel.

Activation extraction shifts are static (fixed per group at calibration) or dynamic (per sample
and group, from the live codes' maximum: what an accelerator computes on the tile it loads).
`start_qat` / `finish_qat` bracket quantization-aware finetuning: a float latent weight trained
through straight-through rounding, written back as INT8 codes on the same scales and shifts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .arithmetic import extraction_shift, int8_range, lowered_codes

ACTIVATION_SHIFT_MODES = ("static", "dynamic")
from .observers import ActivationObserver

FLOAT32_EXACT_LIMIT = 1 << 24


class MixedPrecisionLayer(nn.Module):
    """What Conv2d and Linear share: INT8 storage, channel groups, extraction shifts, boundaries."""

    channel_dim: int

    def __init__(self, float_layer: nn.Module, *, group_size: int, extraction: str,
                 observer: ActivationObserver, eligible: bool, activation_shift: str = "static") -> None:
        super().__init__()
        if activation_shift not in ACTIVATION_SHIFT_MODES:
            raise ValueError(f"activation_shift must be one of {ACTIVATION_SHIFT_MODES}, got {activation_shift!r}")
        self.activation_shift = activation_shift
        self.qat = False
        # Set by the fitness evaluator: an output known to be unchanged, returned without compute.
        self.replay_output: torch.Tensor | None = None
        # Set by `quant.integer.integer_execution`: computes the accumulator on the integer kernels.
        self.integer_kernel = None
        weight = float_layer.weight.detach()
        self.float_layer: nn.Module | None = float_layer
        self.observer: ActivationObserver | None = observer
        self.group_size = group_size
        self.extraction = extraction
        self.eligible = eligible
        self.in_channels = self._in_channels(float_layer)
        self.out_channels = weight.shape[0]
        self.n_groups = math.ceil(self.in_channels / group_size)
        self.calibrating = True
        self.boundary = 0
        # Calibration statistics (plain attributes: not part of the stored model).
        self.macs_per_sample = 0
        self._output_sum_square = 0.0
        self._output_count = 0

        device = weight.device  # the layer lives where the float layer does; `.to()` moves it whole
        channel = self._weight_column_channel(weight.shape, device)
        self.register_buffer("channel_group", torch.arange(self.in_channels, device=device) // group_size,
                             persistent=False)
        self.register_buffer("weight_channel", channel, persistent=False)  # [O, columns]
        self.register_buffer("weight_group", channel // group_size, persistent=False)
        codes_shape = weight.shape
        self.register_buffer("weight_codes", torch.zeros(codes_shape, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(self.out_channels, device=device))
        bias = getattr(float_layer, "bias", None)
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())
        self.register_buffer("weight_shift", torch.zeros(self.out_channels, self.n_groups, dtype=torch.uint8,
                                                         device=device))
        self.register_buffer("act_scale", torch.tensor(1.0, device=device))
        self.register_buffer("act_signed", torch.tensor(True, device=device))
        self.register_buffer("act_shift", torch.zeros(self.n_groups, dtype=torch.uint8, device=device))
        self.register_buffer("act_channel_mean_square", torch.zeros(self.in_channels, device=device))
        self.register_buffer("output_mean_square", torch.tensor(0.0, device=device))
        self.register_buffer("exact_float32", torch.tensor(True, device=device))
        # The selection: groups in the order they turn 4-bit, and one boundary per ratio level.
        self.register_buffer("group_order", torch.arange(self.n_groups, device=device))
        self.register_buffer("group_rank", torch.arange(self.n_groups, device=device))
        self.register_buffer("level_ratios", torch.zeros(0, dtype=torch.float64, device=device))
        self.register_buffer("level_boundaries", torch.zeros(0, dtype=torch.int64, device=device))
        # Bias correction: per level, the float offset that cancels the mean output shift its 4-bit
        # groups cause ([L x O] flat, level-major, so no 2-D float tensor is stored; empty without
        # correction). `bias_offset` is the current one.
        self.register_buffer("level_bias", torch.zeros(0, device=device))
        self.bias_offset: torch.Tensor | None = None
        # [G, O] mean output shift of lowering each group alone, measured on calibration inputs
        # (`measure_bias_shift`); additive over groups, so any set of groups gets its exact offset.
        self.group_bias_shift: torch.Tensor | None = None
        self._bias_shift_sum: torch.Tensor | None = None
        self._bias_shift_count = 0
        # The extraction and shifts calibration chose (set by `freeze`): a selection that installed
        # others (uniform INT4's naive ones) must not leak into the next selection made on the
        # model, and the bias measurement above only holds while they are the ones installed.
        self._calibrated_shifts: tuple[str, torch.Tensor, torch.Tensor] | None = None
        self._shifts_are_calibrated = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The selection's buffers are sized by its level count: adopt the stored sizes.
        for name in ("level_ratios", "level_boundaries", "level_bias"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.group_bias_shift = None  # the loaded level offsets are authoritative
        self.bias_offset = None

    @property
    def device(self) -> torch.device:
        """Where the layer's buffers live (the device its forward computes on)."""
        return self.group_rank.device

    # --- subclass hooks -------------------------------------------------------------------
    @staticmethod
    def _in_channels(float_layer: nn.Module) -> int:
        raise NotImplementedError

    def _weight_column_channel(self, weight_shape: torch.Size, device: torch.device) -> torch.Tensor:
        """[O, columns] input channel that each weight column reads (grouped convs differ)."""
        raise NotImplementedError

    def _accumulate(self, act: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _macs_per_output(self) -> int:
        raise NotImplementedError

    def _view_channels(self, per_channel: torch.Tensor, ndim: int) -> torch.Tensor:
        """Reshape a per-channel tensor to broadcast along the channel dimension (inputs and outputs share it)."""
        shape = [1] * ndim
        shape[self.channel_dim] = -1
        return per_channel.view(shape)

    # --- calibration ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.replay_output is not None:
            return self.replay_output
        if self.calibrating:
            return self._calibration_forward(x)
        if self.qat:
            return self._qat_forward(x)
        acc = self.integer_kernel(x) if self.integer_kernel is not None else self.integer_accumulator(x)
        return self.dequantize(acc)

    @torch.no_grad()
    def _calibration_forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observer.update(x, self.channel_dim)
        y = self.float_layer(x)
        self.macs_per_sample = (y[0].numel()) * self._macs_per_output()
        self._output_sum_square += float(y.double().square().sum())
        self._output_count += y.numel()
        return y

    @torch.no_grad()
    def freeze(self) -> None:
        """Quantize weights, fix activation scale and extraction shifts; drop the float weights."""
        if not self.calibrating:
            return
        weight = self.float_layer.weight.detach().float()
        flat = weight.reshape(self.out_channels, -1)
        scale = flat.abs().amax(dim=1) / int8_range(True)[1]
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.round(weight / scale.view(-1, *[1] * (weight.dim() - 1))).clamp(*int8_range(True))
        self.weight_codes.copy_(codes.to(torch.int8))
        self.weight_scale.copy_(scale)

        params = self.observer.params()
        self.act_scale.fill_(params.scale)
        self.act_signed.fill_(params.signed)
        self.act_channel_mean_square.copy_(params.channel_mean_square)
        self.output_mean_square.fill_(self._output_sum_square / max(self._output_count, 1))

        # Weight shift per (output channel, group): from the largest code the pair holds.
        column_max = self.weight_codes.to(torch.int32).abs().reshape(*self.weight_group.shape, -1).amax(dim=-1)
        group_max = torch.zeros(self.out_channels, self.n_groups, dtype=torch.int32, device=self.device)
        group_max.scatter_reduce_(1, self.weight_group, column_max, reduce="amax")
        self.weight_shift.copy_(extraction_shift(group_max, True, self.extraction).to(torch.uint8))
        # Activation shift per group: from the largest code calibration saw in the group (static).
        channel_max_code = torch.round(params.channel_absmax / params.scale).clamp(max=int8_range(params.signed)[1])
        act_group_max = torch.zeros(self.n_groups, dtype=torch.int32, device=self.device)
        act_group_max.scatter_reduce_(0, self.channel_group, channel_max_code.to(torch.int32), reduce="amax")
        self.act_shift.copy_(extraction_shift(act_group_max, params.signed, self.extraction).to(torch.uint8))
        self._calibrated_shifts = (self.extraction, self.act_shift.clone(), self.weight_shift.clone())

        self.exact_float32.fill_(self.accumulator_bound() < FLOAT32_EXACT_LIMIT)
        self._finish_freeze()
        self.float_layer = None
        self.observer = None
        self.calibrating = False

    def _finish_freeze(self) -> None:
        """Subclasses copy what their forward needs from the float layer before it is dropped."""

    def accumulator_bound(self) -> int:
        """Largest |partial sum| any input can produce, at any ratio: max_o sum |w| * max |a|."""
        codes = self.weight_codes.to(torch.int64)
        shift = self._weight_shift_per_column().to(torch.int64)
        lowered = lowered_codes(codes, shift, True)
        per_weight = torch.maximum(codes.abs(), lowered.abs()).reshape(self.out_channels, -1)
        act_max = 128 if bool(self.act_signed) else int8_range(False)[1]
        return int(per_weight.sum(dim=1).max()) * act_max

    # --- the quantized forward ------------------------------------------------------------
    def _weight_shift_per_column(self) -> torch.Tensor:
        """[O, columns, 1...] weight shift broadcastable over the weight codes."""
        shift = self.weight_shift.to(torch.int32).gather(1, self.weight_group)
        return shift.view(*shift.shape, *[1] * (self.weight_codes.dim() - 2))

    def low_bit_groups(self) -> torch.Tensor:
        """[G] bool: the groups that run in 4-bit at the current ratio."""
        return self.group_rank < self.boundary

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """INT8 activation codes (int32 tensor) with the calibrated per-tensor scale."""
        lo, hi = int8_range(bool(self.act_signed))
        return torch.round(x / self.act_scale).clamp(lo, hi).to(torch.int32)

    def effective_operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer operands on the INT8 grid: 4-bit groups replaced by their lowered codes."""
        return self._lower_operands(self.quantize_input(x), self.weight_codes.to(torch.int32))

    def _lower_operands(self, act: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the 4-bit groups of integer activation and weight codes by their lowered codes."""
        if self.boundary == 0:
            return act, weight
        low = self.low_bit_groups()
        signed = bool(self.act_signed)
        act_low = self._view_channels(low[self.channel_group], act.dim())
        act = torch.where(act_low, lowered_codes(act, self.activation_shifts(act), signed), act)
        weight_low = low[self.weight_group].view(*self.weight_group.shape, *[1] * (weight.dim() - 2))
        weight = torch.where(weight_low, lowered_codes(weight, self._weight_shift_per_column(), True), weight)
        return act, weight

    def activation_shifts(self, act: torch.Tensor) -> torch.Tensor:
        """Extraction shift of every activation code, broadcastable over `act` (int32 codes).

        Static: the calibrated shift of the channel's group. Dynamic: per sample and group, from
        the largest code that sample holds in the group (so a quiet input keeps its low bits).
        """
        if self.activation_shift == "static":
            return self._view_channels(self.act_shift.to(torch.int32)[self.channel_group], act.dim())
        n = act.shape[0]
        channels_last = act.movedim(self.channel_dim, -1).reshape(n, -1, self.in_channels)
        channel_max = channels_last.abs().amax(dim=1)  # [N, C]
        group_max = torch.zeros(n, self.n_groups, dtype=channel_max.dtype, device=act.device)
        group_max.scatter_reduce_(1, self.channel_group.expand(n, -1), channel_max, reduce="amax")
        shift = extraction_shift(group_max, bool(self.act_signed), self.extraction)[:, self.channel_group]  # [N, C]
        shape = [n] + [1] * (act.dim() - 1)
        shape[self.channel_dim] = self.in_channels
        return shift.view(shape)

    def _outputs_of_channels(self, channels: torch.Tensor) -> torch.Tensor | None:
        """Output channels that read `channels` (None for grouped convs other than depthwise)."""
        return torch.arange(self.out_channels, device=channels.device)

    @torch.no_grad()
    def group_lowering_errors(self, codes: torch.Tensor, centered: bool) -> torch.Tensor | None:
        """[G] mean square float output change (over every output and position) when only that
        group runs in 4-bit, from second moments of the inputs each output reads; None where the
        layer's structure does not allow it (grouped convs other than depthwise).

        An output's change is a dot product of the group's tap windows (INT8 and lowered codes) with
        the weights, so its mean square is u^T M u with M the windows' second-moment matrix
        ([2 g taps]^2): exact, without an output tensor per group. `centered` removes the mean
        (what bias correction cancels). `codes` are the layer's INT8 input codes.
        """
        if self._outputs_of_channels(torch.zeros(1, dtype=torch.int64, device=self.device)) is None:
            return None
        lowered = lowered_codes(codes, self.activation_shifts(codes), bool(self.act_signed))
        w8 = self.weight_codes.to(torch.int32)
        w4 = lowered_codes(w8, self._weight_shift_per_column(), True)
        scale = (self.act_scale * self.weight_scale).double()
        taps = w8[0, 0].numel()
        errors = torch.zeros(self.n_groups, dtype=torch.float64, device=self.device)
        for group in range(self.n_groups):
            channels = (self.channel_group == group).nonzero().flatten()
            outputs = self._outputs_of_channels(channels)
            windows = torch.cat([self._tap_windows(lowered.index_select(self.channel_dim, channels)),
                                 self._tap_windows(codes.index_select(self.channel_dim, channels))], dim=1)
            moment = windows.T @ windows / windows.shape[0]  # [2 g taps]^2
            if centered:
                mean = windows.mean(dim=0)
                moment -= torch.outer(mean, mean)
            if getattr(self, "groups", 1) == 1:  # dense: every output reads every channel of the group
                u4, u8 = (w[:, channels].reshape(self.out_channels, -1).double() for w in (w4, w8))
            else:  # depthwise: an output reads only its own channel's taps
                rows = torch.arange(len(outputs), device=self.device)
                slot = rows // (len(outputs) // len(channels))
                u4, u8 = (torch.zeros(len(outputs), len(channels), taps, dtype=torch.float64, device=self.device)
                          for _ in range(2))
                u4[rows, slot] = w4[outputs].reshape(len(outputs), taps).double()
                u8[rows, slot] = w8[outputs].reshape(len(outputs), taps).double()
                u4, u8 = u4.reshape(len(outputs), -1), u8.reshape(len(outputs), -1)
            u = torch.cat([u4, -u8], dim=1) * scale[outputs, None]
            errors[group] = float(((u @ moment) * u).sum()) / self.out_channels
        return errors

    def _tap_windows(self, codes: torch.Tensor) -> torch.Tensor:
        """[positions, channels x taps] the input values each output position reads (channel-major)."""
        return codes.double().reshape(-1, codes.shape[-1])

    @torch.no_grad()
    def measure_bias_shift(self, x: torch.Tensor) -> None:
        """Accumulate, over calibration inputs `x` (as the INT8 model feeds the layer), the mean
        float output shift that lowering each group alone causes; `finish_bias_shift` ends it.

        A mean commutes with the layer: the mean output is the weights times the mean input each tap
        reads. So per input channel and tap only the mean INT8 code and the mean lowered code are
        needed ([C, taps]), not a forward per group: exact, and far cheaper.
        """
        codes = self.quantize_input(x)
        lowered = lowered_codes(codes, self.activation_shifts(codes), bool(self.act_signed))
        mean8, positions = self._tap_means(codes)
        mean4, _ = self._tap_means(lowered)
        weight = self.weight_codes.double().reshape(*self.weight_channel.shape, -1)  # [O, columns, taps]
        weight4 = lowered_codes(self.weight_codes.to(torch.int32), self._weight_shift_per_column(), True)
        weight4 = weight4.double().reshape(weight.shape)
        channel = self.weight_channel  # [O, columns]: the input channel each column reads
        per_column = (weight4 * mean4[channel]).sum(-1) - (weight * mean8[channel]).sum(-1)  # [O, columns]
        shift = torch.zeros(self.n_groups, self.out_channels, dtype=torch.float64, device=self.device)
        outputs = torch.arange(self.out_channels, device=self.device)
        shift.index_put_((self.weight_group, outputs[:, None].expand_as(channel)),
                         per_column, accumulate=True)
        shift *= (self.act_scale * self.weight_scale).double()[None, :] * positions
        self._bias_shift_sum = shift if self._bias_shift_sum is None else self._bias_shift_sum + shift
        self._bias_shift_count += positions

    def _tap_means(self, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """([C, taps] mean code each tap reads over all output positions, output positions)."""
        flat = codes.double().reshape(-1, self.in_channels)
        return flat.mean(dim=0)[:, None], flat.shape[0]

    def finish_bias_shift(self) -> None:
        if self._bias_shift_sum is not None:
            self.group_bias_shift = self._bias_shift_sum / max(self._bias_shift_count, 1)
        self._bias_shift_sum, self._bias_shift_count = None, 0

    def lowering_delta(self, group: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(whole-layer accumulator change, every output channel) when only `group` runs in 4-bit:
        the path for layers `group_lowering_errors` cannot take."""
        saved = (self.group_order, self.group_rank, self.boundary, self.bias_offset)
        self.set_low_bit_groups(torch.arange(self.n_groups, device=self.device) == group)
        try:
            delta = self.integer_accumulator(x)
            self.boundary = 0
            delta = delta - self.integer_accumulator(x)
        finally:
            self.group_order, self.group_rank, self.boundary, self.bias_offset = saved
        return delta, torch.arange(self.out_channels, device=self.device)

    def _offset_for(self, low: torch.Tensor) -> torch.Tensor | None:
        """The bias offset that cancels the mean shift of running the groups in `low` in 4-bit."""
        if self.group_bias_shift is None or not self._shifts_are_calibrated:
            return None
        return -(low.double() @ self.group_bias_shift).float()

    def integer_accumulator(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer accumulator, held in a float tensor (float32 only where provably exact)."""
        act, weight = self.effective_operands(x)
        dtype = torch.float32 if bool(self.exact_float32) else torch.float64
        return self._accumulate(act.to(dtype), weight.to(dtype))

    def dequantize(self, acc: torch.Tensor) -> torch.Tensor:
        """One float32 dequantization per output channel: acc * s_a * s_w[o] + bias[o]."""
        scale = self._view_channels(self.act_scale * self.weight_scale, acc.dim())
        y = acc.float() * scale
        if self.bias is not None:
            y = y + self._view_channels(self.bias, acc.dim())
        if self.bias_offset is not None and self.boundary > 0:
            y = y + self._view_channels(self.bias_offset, acc.dim())
        return y

    # --- quantization-aware finetuning ------------------------------------------------------
    def start_qat(self) -> None:
        """Expose a float latent weight (and bias) that straight-through rounding maps to INT8 codes."""
        scale = self.weight_scale.view(-1, *[1] * (self.weight_codes.dim() - 1))
        self.qat_weight = nn.Parameter(self.weight_codes.float() * scale)
        self.qat_bias = None if self.bias is None else nn.Parameter(self.bias.clone())
        self.qat = True

    def _qat_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized forward with straight-through gradients (float32, not bit-exact)."""
        scale = self.weight_scale.view(-1, *[1] * (self.weight_codes.dim() - 1))
        weight = _round_through(self.qat_weight / scale, *int8_range(True))
        act = _round_through(x / self.act_scale, *int8_range(bool(self.act_signed)))
        low_act, low_weight = self._lower_operands(act.detach().to(torch.int32), weight.detach().to(torch.int32))
        act = act + (low_act.float() - act).detach()
        weight = weight + (low_weight.float() - weight).detach()
        y = self._accumulate(act, weight) * self._view_channels(self.act_scale * self.weight_scale, x.dim())
        if self.bias_offset is not None and self.boundary > 0:
            y = y + self._view_channels(self.bias_offset, y.dim())
        return y if self.qat_bias is None else y + self._view_channels(self.qat_bias, y.dim())

    @torch.no_grad()
    def finish_qat(self) -> None:
        """Write the trained latent weights back as INT8 codes (same scales and shifts)."""
        if not self.qat:
            return
        scale = self.weight_scale.view(-1, *[1] * (self.weight_codes.dim() - 1))
        self.weight_codes.copy_(torch.round(self.qat_weight / scale).clamp(*int8_range(True)).to(torch.int8))
        if self.qat_bias is not None:
            self.bias.copy_(self.qat_bias)
        del self.qat_weight, self.qat_bias
        self.qat = False
        self.exact_float32.fill_(self.accumulator_bound() < FLOAT32_EXACT_LIMIT)

    # --- selection and ratio --------------------------------------------------------------
    def group_macs(self) -> torch.Tensor:
        """[G] MACs per sample that each channel group carries (every input channel carries MACs/C)."""
        sizes = torch.bincount(self.channel_group, minlength=self.n_groups).double()
        return sizes * (self.macs_per_sample / self.in_channels)

    def apply_selection(self, order: list[int], boundaries: list[int], ratios: list[float]) -> None:
        if sorted(order) != list(range(self.n_groups)):
            raise ValueError(f"channel order must be a permutation of {self.n_groups} groups")
        if list(boundaries) != sorted(boundaries) or any(b < 0 or b > self.n_groups for b in boundaries):
            raise ValueError("boundaries must be non-decreasing and within the group count (nested levels)")
        if len(boundaries) != len(ratios):
            raise ValueError("one boundary per ratio level is needed")
        device = self.device
        order_t = torch.tensor(order, dtype=torch.int64, device=device)
        self.group_order = order_t
        self.group_rank = torch.empty_like(order_t).scatter_(0, order_t, torch.arange(self.n_groups, device=device))
        self.level_ratios = torch.tensor(ratios, dtype=torch.float64, device=device)
        self.level_boundaries = torch.tensor(boundaries, dtype=torch.int64, device=device)
        if self.group_bias_shift is not None and self._shifts_are_calibrated:
            self.level_bias = torch.cat([self._offset_for(self.group_rank < b) for b in boundaries]) \
                if boundaries else torch.zeros(0, device=device)
        elif self.group_bias_shift is not None or self.level_bias.numel() != len(boundaries) * self.out_channels:
            # foreign shifts (the measurement does not hold), or no measurement and no loaded offsets
            self.level_bias = torch.zeros(0, device=device)
        self.boundary = 0
        self.bias_offset = None

    def set_low_bit_groups(self, low: torch.Tensor) -> None:
        """Run exactly the groups of a [G] bool mask in 4-bit (used to score search candidates)."""
        low = low.to(self.device)  # candidates are host-side masks
        order = torch.cat([low.nonzero().flatten(), (~low).nonzero().flatten()])
        self.group_order = order
        self.group_rank = torch.empty_like(order).scatter_(0, order, torch.arange(self.n_groups, device=self.device))
        self.boundary = int(low.sum())
        self.bias_offset = self._offset_for(low)

    def install_shifts(self, extraction: str, act_shift: torch.Tensor, weight_shift: torch.Tensor) -> None:
        """Adopt the extraction mode and shifts a selection was made with."""
        if act_shift.shape != self.act_shift.shape or weight_shift.shape != self.weight_shift.shape:
            raise ValueError("selection shifts do not fit the layer's channel groups")
        self.extraction = extraction
        self.act_shift.copy_(act_shift)
        self.weight_shift.copy_(weight_shift)
        self.exact_float32.fill_(self.accumulator_bound() < FLOAT32_EXACT_LIMIT)
        calibrated = self._calibrated_shifts
        self._shifts_are_calibrated = calibrated is None or (
            extraction == calibrated[0] and torch.equal(act_shift, calibrated[1])
            and torch.equal(weight_shift, calibrated[2]))

    def restore_calibrated_shifts(self) -> None:
        """Reinstall the extraction and shifts calibration chose (no-op on a loaded model)."""
        if self._calibrated_shifts is not None and not self._shifts_are_calibrated:
            self.install_shifts(*self._calibrated_shifts)

    def set_ratio(self, ratio: float) -> None:
        """Select a stored ratio level: moves one boundary index, nothing else."""
        self.bias_offset = None
        if ratio == 0:
            self.boundary = 0
            return
        matches = (self.level_ratios - ratio).abs() < 1e-9
        if not bool(matches.any()):
            if self.level_ratios.numel() == 0:  # a layer kept INT8 (first conv, classifier)
                self.boundary = 0
                return
            raise ValueError(f"ratio {ratio} is not a stored level {self.level_ratios.tolist()}")
        level = int(matches.nonzero()[0, 0])
        self.boundary = int(self.level_boundaries[level])
        if self.level_bias.numel() == self.level_ratios.numel() * self.out_channels:
            self.bias_offset = self.level_bias.view(-1, self.out_channels)[level]


def _round_through(value: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """clamp then round, with the straight-through estimator for the rounding."""
    clamped = value.clamp(lo, hi)
    return clamped + (torch.round(clamped) - clamped).detach()


class MixedPrecisionConv2d(MixedPrecisionLayer):
    channel_dim = 1

    def __init__(self, float_layer: nn.Conv2d, **kwargs) -> None:
        if float_layer.padding_mode != "zeros":
            raise ValueError("only zero-padded convolutions can be quantized")
        super().__init__(float_layer, **kwargs)
        self.kernel_size = float_layer.kernel_size
        self.stride = float_layer.stride
        self.padding = float_layer.padding
        self.dilation = float_layer.dilation
        self.groups = float_layer.groups
        # timm's Conv2dSame pads at run time from the input size (TF "SAME" padding).
        self.dynamic_same_padding = type(float_layer).__name__ == "Conv2dSame"

    @staticmethod
    def _in_channels(float_layer: nn.Module) -> int:
        return float_layer.in_channels

    def _weight_column_channel(self, weight_shape: torch.Size, device: torch.device) -> torch.Tensor:
        out_channels, in_per_group = weight_shape[0], weight_shape[1]
        out_per_group = out_channels // (self.in_channels // in_per_group)
        conv_group = torch.arange(out_channels, device=device) // out_per_group
        return conv_group[:, None] * in_per_group + torch.arange(in_per_group, device=device)[None, :]

    def _macs_per_output(self) -> int:
        return self.weight_codes[0].numel()

    def _accumulate(self, act: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same_padding:
            from timm.layers.padding import pad_same

            act = pad_same(act, list(self.kernel_size), list(self.stride), list(self.dilation))
        return F.conv2d(act, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def _tap_means(self, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        x = codes.double()
        if self.dynamic_same_padding:
            from timm.layers.padding import pad_same

            x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation))
        (ph, pw), (sh, sw), (dh, dw), (kh, kw) = self.padding, self.stride, self.dilation, self.kernel_size
        x = F.pad(x, (pw, pw, ph, ph))
        out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        means = [x[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh, j * dw:j * dw + sw * (out_w - 1) + 1:sw].mean(dim=(0, 2, 3))
                 for i in range(kh) for j in range(kw)]
        return torch.stack(means, dim=1), x.shape[0] * out_h * out_w

    def _tap_windows(self, codes: torch.Tensor) -> torch.Tensor:
        x = codes.double()
        if self.dynamic_same_padding:
            from timm.layers.padding import pad_same

            x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation))
        windows = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # [N, C taps, L]
        return windows.transpose(1, 2).reshape(-1, windows.shape[1])

    def _outputs_of_channels(self, channels: torch.Tensor) -> torch.Tensor | None:
        if self.groups == 1:
            return torch.arange(self.out_channels, device=channels.device)
        if self.groups == self.in_channels:  # depthwise: input channel c feeds outputs c*m .. c*m + m - 1
            per_channel = self.out_channels // self.in_channels
            return (channels[:, None] * per_channel + torch.arange(per_channel, device=channels.device)).flatten()
        return None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, group_size={self.group_size}, boundary={self.boundary}/{self.n_groups}")


class MixedPrecisionLinear(MixedPrecisionLayer):
    channel_dim = -1

    @staticmethod
    def _in_channels(float_layer: nn.Module) -> int:
        return float_layer.in_features

    def _weight_column_channel(self, weight_shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.arange(weight_shape[1], device=device).expand(weight_shape[0], -1).contiguous()

    def _macs_per_output(self) -> int:
        return self.in_channels

    def _accumulate(self, act: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(act, weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_channels}, out_features={self.out_channels}, "
                f"group_size={self.group_size}, boundary={self.boundary}/{self.n_groups}")
