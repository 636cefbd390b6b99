"""Turn a float model into a FlexiQ mixed-precision model, and steer it.

`convert_model` folds BatchNorm into the preceding conv, replaces every Conv2d and Linear by its
mixed-precision twin, calibrates on a few batches and freezes. The layers that run first and
last (stem conv, classifier) stay INT8 by default. Model-level helpers: `mixed_layers`,
`set_ratio`, `mac_share_4bit`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

from ..config import QuantConfig
from ..errors import FlexiqError
from ..devices import module_device
from .modules import MixedPrecisionConv2d, MixedPrecisionLayer, MixedPrecisionLinear
from .observers import create_observer


def execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the quantizable layers, in the order one forward pass calls them."""
    order: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    handles = [
        module.register_forward_pre_hook(lambda m, _inp: order.append(names[m]) if names[m] not in order else None)
        for module in names if _quantizable(module)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


# Layer types whose forward is exactly conv2d / linear on `.weight` (timm's twins included).
QUANTIZABLE_TYPE_NAMES = {"Conv2d", "Conv2dSame", "Linear"}


def _quantizable(module: nn.Module) -> bool:
    """True for plain Conv2d/Linear; an error for subclasses that transform their weights."""
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        return False
    if type(module).__name__ not in QUANTIZABLE_TYPE_NAMES:
        raise ValueError(f"unsupported layer type {type(module).__name__}: its forward is not a plain conv/linear")
    return True


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every BatchNorm2d that directly consumes a Conv2d's output into that conv (in place).

    Pairs are found by running the model once and matching tensors, so it works for any module
    structure (timm's BatchNormAct2d keeps its activation). Folding is exact only when the BN is the
    conv output's one use: a fold that changes the model's outputs on `example` (the raw output is
    also concatenated, or added to in place before the BN) is undone. Returns how many were folded.
    """
    produced_by: dict[int, str] = {}
    keep_alive: list[torch.Tensor] = []
    pairs: "OrderedDict[str, str]" = OrderedDict()
    names = {module: name for name, module in model.named_modules()}

    def after_conv(module, _inp, out):
        keep_alive.append(out)
        produced_by[id(out)] = names[module]

    def before_bn(module, inp):
        conv = produced_by.get(id(inp[0]))
        if conv is not None:
            pairs.setdefault(names[module], conv)

    handles = []
    for module, name in names.items():
        if isinstance(module, nn.Conv2d) and _quantizable(module):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        reference = _output_tensors(model(example))
    finally:
        for handle in handles:
            handle.remove()
    keep_alive.clear()

    consumers: dict[str, int] = {}
    for conv in pairs.values():
        consumers[conv] = consumers.get(conv, 0) + 1
    candidates = [(bn, conv) for bn, conv in pairs.items() if consumers[conv] == 1]  # a conv cannot absorb two BNs
    undo = [_fold_pair(model, bn, conv) for bn, conv in candidates]
    if _same_outputs(_output_tensors(model(example)), reference):
        return len(candidates)
    for restore in reversed(undo):  # some conv's raw output is used besides its BN: keep only exact folds
        restore()
    folded = 0
    for bn, conv in candidates:
        restore = _fold_pair(model, bn, conv)
        if _same_outputs(_output_tensors(model(example)), reference):
            folded += 1
        else:
            restore()
    return folded


def _fold_pair(model: nn.Module, bn_name: str, conv_name: str):
    """Fold one BN into its conv; returns the function that undoes it."""
    bn = model.get_submodule(bn_name)
    conv = model.get_submodule(conv_name)
    weight, bias = conv.weight.detach().clone(), conv.bias
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(inv_std)
    beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
    factor = gamma * inv_std
    conv.weight.copy_(conv.weight * factor.view(-1, 1, 1, 1))
    old_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((old_bias - bn.running_mean) * factor + beta)
    # timm's BatchNormAct2d = BN, dropout, activation: keep what follows the normalization.
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    _set_submodule(model, bn_name, nn.Sequential(*rest) if rest else nn.Identity())

    def restore() -> None:
        conv.weight.copy_(weight)
        conv.bias = bias
        _set_submodule(model, bn_name, bn)

    return restore


def _output_tensors(output) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _output_tensors(item)]
    return []


def _same_outputs(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> bool:
    """Equal up to float rounding (folding reorders a multiplication)."""
    def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
        if out.shape != ref.shape or ref.numel() == 0:
            return out.shape == ref.shape
        scale = float(ref.abs().nan_to_num(posinf=0, neginf=0).max())
        return torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * scale, equal_nan=True)

    return len(outputs) == len(reference) and all(close(out, ref) for out, ref in zip(outputs, reference))


def is_depthwise(layer: nn.Module) -> bool:
    """A conv with one input channel per group (MobileNet/EfficientNet's spatial convs)."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


@torch.no_grad()
def convert_model(model: nn.Module, calibration: Iterable[torch.Tensor], config: QuantConfig | None = None) -> nn.Module:
    """A calibrated, frozen FlexiQ copy of `model` (which is left untouched), on the model's device."""
    config = config or QuantConfig()
    device = module_device(model)
    batches = (batch.to(device) for batch in calibration)
    try:
        first = next(batches)
    except StopIteration:
        raise ValueError("calibration needs at least one batch") from None
    model = copy.deepcopy(model).eval()
    fold_batchnorm(model, first[:2])
    order = execution_order(model, first[:2])
    if not order:
        raise ValueError("the model has no Conv2d or Linear layer to quantize")
    kept_int8 = set()
    if config.keep_first_int8:
        kept_int8.add(order[0])
    if config.keep_last_int8:
        kept_int8.add(order[-1])
    if config.keep_depthwise_int8:
        kept_int8.update(name for name in order if is_depthwise(model.get_submodule(name)))
    for name in order:
        layer = model.get_submodule(name)
        mixed_type = MixedPrecisionConv2d if isinstance(layer, nn.Conv2d) else MixedPrecisionLinear
        observer_kwargs = {"percentile": config.percentile} if config.observer == "percentile" else {}
        try:
            mixed = mixed_type(
                layer,
                group_size=config.group_size,
                extraction=config.extraction,
                observer=create_observer(config.observer, **observer_kwargs),
                eligible=name not in kept_int8,
                activation_shift=config.activation_shift,
            )
        except ValueError as exc:  # a layer this converter cannot represent: name it
            raise FlexiqError(f"cannot quantize layer {name!r} ({type(layer).__name__}): {exc}") from None
        _set_submodule(model, name, mixed)
    model(first)
    seen = [first]
    for batch in batches:
        model(batch)
        seen.append(batch)
    for layer in mixed_layers(model).values():
        layer.freeze()
    if config.bias_correction:
        measure_bias_shifts(model, seen)
    model.flexiq_config = config
    return model


@torch.no_grad()
def measure_bias_shifts(model: nn.Module, calibration: Iterable[torch.Tensor]) -> None:
    """Measure every eligible layer's per-group mean output shift on its INT8 inputs (bias correction).

    Streamed layer by layer through forward hooks, so no layer's inputs for all images are held.
    """
    layers = mixed_layers(model, eligible_only=True)
    for layer in mixed_layers(model).values():
        layer.boundary = 0
    hooks = [layer.register_forward_pre_hook(lambda m, inp: m.measure_bias_shift(inp[0])) for layer in layers.values()]
    try:
        for batch in calibration:
            model(batch.to(module_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    for layer in layers.values():
        layer.finish_bias_shift()


def mixed_layers(model: nn.Module, eligible_only: bool = False) -> "OrderedDict[str, MixedPrecisionLayer]":
    """The model's mixed-precision layers by name (module order)."""
    return OrderedDict(
        (name, module) for name, module in model.named_modules()
        if isinstance(module, MixedPrecisionLayer) and (module.eligible or not eligible_only)
    )


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """The input each mixed layer receives when `model` runs on `images`, by layer name."""
    captured: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    hooks = [layer.register_forward_pre_hook(lambda _m, inp, name=name: captured.__setitem__(name, inp[0]))
             for name, layer in mixed_layers(model).items()]
    try:
        model(images.to(module_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def set_ratio(model: nn.Module, ratio: float) -> None:
    """Switch the whole model to a stored 4-bit ratio level: one boundary move per layer."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    for layer in mixed_layers(model).values():
        layer.set_ratio(ratio)


def restore_calibrated_shifts(model: nn.Module) -> None:
    """Undo the extraction shifts a selection installed (e.g. uniform INT4's naive ones)."""
    for layer in mixed_layers(model).values():
        layer.restore_calibrated_shifts()


def mac_share_4bit(model: nn.Module) -> float:
    """Share of the eligible layers' MACs that run in 4-bit at the current ratio."""
    low = total = 0.0
    for layer in mixed_layers(model, eligible_only=True).values():
        macs = layer.group_macs()
        total += float(macs.sum())
        low += float(macs[layer.low_bit_groups()].sum())
    return low / total if total else 0.0
