"""Integer execution of a converted model on the CPU kernels of `kernels/cpu_gemm.py`.

Inside `integer_execution(model)` every frozen mixed layer computes its accumulator from INT8
activation codes with int8 GEMMs and int32 accumulation (convolutions by im2col; grouped and
depthwise ones as batched per-group GEMMs) instead of the float-held accumulator of the fake-quant
forward. Both are the same integer (tests check it bit for bit), and the dequantization is the
layer's own, so the logits are identical too: tolerance zero, not a float epsilon.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from kernels.cpu_gemm import (EIGHT_BIT, PackedWeights, activation_operand, depthwise_conv, gemm_operands,
                              grouped_gemm, im2col_operand, output_size, pack_weights, padded_operand, tap_major)

from .modules import MixedPrecisionConv2d, MixedPrecisionLayer


class IntegerLayerKernel:
    """One frozen mixed layer's accumulator on the integer kernels; packed weights cached per 4-bit set."""

    def __init__(self, layer: MixedPrecisionLayer) -> None:
        self.layer = layer
        self._packed: dict[bytes, PackedWeights] = {}
        self.is_conv = isinstance(layer, MixedPrecisionConv2d)
        self.taps = layer.kernel_size[0] * layer.kernel_size[1] if self.is_conv else 1
        self.groups = layer.groups if self.is_conv else 1

    def packed(self) -> PackedWeights:
        """Weights lowered where their group is 4-bit at the layer's current boundary (packed once)."""
        low = self.layer.low_bit_groups()
        key = low.numpy().tobytes()
        if key not in self._packed:
            layer = self.layer
            shift = layer.weight_shift.to(torch.int8).gather(1, layer.weight_group)  # [O, C/groups]
            shift = torch.where(low[layer.weight_group], shift, torch.full_like(shift, EIGHT_BIT))
            if self.is_conv:  # the tap-major column order of `im2col_operand`
                codes = tap_major(layer.weight_codes)
                shift = tap_major(shift[:, :, None, None].expand(*layer.weight_codes.shape))
            else:
                codes = layer.weight_codes
            self._packed[key] = pack_weights(codes, shift)
        return self._packed[key]

    def activation_shift(self, codes: torch.Tensor) -> torch.Tensor:
        """[S, C] int8 extraction shift per channel (EIGHT_BIT where INT8): S = 1 static, batch dynamic."""
        layer = self.layer
        low = layer.low_bit_groups()[layer.channel_group]  # [C]
        if layer.activation_shift == "static" or not bool(low.any()):
            shift = layer.act_shift.to(torch.int8)[layer.channel_group].unsqueeze(0)
        else:
            shift = layer.activation_shifts(codes).reshape(codes.shape[0], layer.in_channels).to(torch.int8)
        return torch.where(low, shift, torch.full_like(shift, EIGHT_BIT))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        codes = layer.quantize_input(x)  # int32, the fake-quant path's own quantization
        signed = bool(layer.act_signed)
        shift = self.activation_shift(codes)
        if not self.is_conv:
            rows = codes.reshape(-1, layer.in_channels)
            acc = gemm_operands(activation_operand(rows, shift, signed), self.packed(), signed)
            return acc.view(*x.shape[:-1], layer.out_channels)
        if layer.dynamic_same_padding:
            from timm.layers.padding import pad_same

            codes = pad_same(codes, list(layer.kernel_size), list(layer.stride), list(layer.dilation))
        padded = padded_operand(codes, layer.padding, shift, signed)
        geometry = (layer.kernel_size, layer.stride, layer.dilation)
        if self.groups == 1:
            acc = gemm_operands(im2col_operand(padded, *geometry), self.packed(), signed)
        elif self.groups == layer.in_channels == layer.out_channels:
            acc = depthwise_conv(padded, self.packed(), *geometry, signed)
        else:
            acc = grouped_gemm(im2col_operand(padded, *geometry), self.packed(), self.groups, self.taps, signed)
        out_h, out_w = output_size(padded, *geometry)
        return acc.view(codes.shape[0], out_h * out_w, layer.out_channels).transpose(1, 2).reshape(
            codes.shape[0], layer.out_channels, out_h, out_w)


@contextmanager
def integer_execution(model: nn.Module):
    """Run every frozen mixed layer of `model` on the integer CPU kernels inside the block."""
    layers = [m for m in model.modules() if isinstance(m, MixedPrecisionLayer) and not m.calibrating]
    for layer in layers:
        layer.integer_kernel = IntegerLayerKernel(layer)
    try:
        yield model
    finally:
        for layer in layers:
            layer.integer_kernel = None
