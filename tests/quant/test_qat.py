"""Quantization-aware finetuning mode: exact round trip, STE forward close to the integer forward."""

import torch

from flexiq_search.quant.convert import convert_model, mixed_layers, set_ratio
from flexiq_search.selection import apply_selection, create_strategy


def test_qat_forward_matches_integer_forward_and_round_trips(trained_resnet20, digits_batches):
    model = convert_model(trained_resnet20, digits_batches)
    apply_selection(model, create_strategy("range").select(model, [0.5, 1.0]))
    x = digits_batches[1][:16]
    codes_before = {n: l.weight_codes.clone() for n, l in mixed_layers(model).items()}
    for ratio in (0, 0.5, 1.0):
        set_ratio(model, ratio)
        with torch.no_grad():
            exact = model(x)
        for layer in mixed_layers(model).values():
            layer.start_qat()
        approx = model(x)
        approx.square().sum().backward()
        assert all(l.qat_weight.grad is not None and l.qat_weight.grad.abs().sum() > 0
                   for l in mixed_layers(model).values()), "gradients reach every layer"
        # Float32 sums in another order and per-layer requantization of rounding ties: close, not equal.
        assert (approx.detach() - exact).abs().max() < 1e-3 * exact.abs().max()
        for layer in mixed_layers(model).values():
            layer.finish_qat()
    for name, layer in mixed_layers(model).items():
        assert torch.equal(layer.weight_codes, codes_before[name])
        assert not hasattr(layer, "qat_weight")
