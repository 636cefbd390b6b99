"""The integer CPU path computes each layer's accumulator in int32 equal to the fake-quant one."""

import pytest
import torch

from flexiq_search.config import QuantConfig
from flexiq_search.quant.convert import capture_layer_inputs, convert_model, mixed_layers, set_ratio
from flexiq_search.quant.integer import integer_execution
from flexiq_search.selection import apply_selection, create_strategy

LEVELS = [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("activation_shift", ["static", "dynamic"])
def test_int32_accumulators_equal_the_exact_float_held_ones(trained_resnet20, digits_batches, activation_shift):
    qmodel = convert_model(trained_resnet20, digits_batches, QuantConfig(activation_shift=activation_shift))
    apply_selection(qmodel, create_strategy("random", seed=1).select(qmodel, LEVELS))
    images = digits_batches[0][:16]
    with torch.no_grad():
        for ratio in [0] + LEVELS:
            set_ratio(qmodel, ratio)
            inputs = capture_layer_inputs(qmodel, images)
            fake_quant = qmodel(images)
            with integer_execution(qmodel):
                for name, layer in mixed_layers(qmodel).items():
                    acc = layer.integer_kernel(inputs[name])
                    assert acc.dtype == torch.int32
                    assert torch.equal(acc.double(), layer.integer_accumulator(inputs[name]).double()), (name, ratio)
                assert torch.equal(qmodel(images), fake_quant)
    assert all(layer.integer_kernel is None for layer in mixed_layers(qmodel).values()), "the context cleans up"


def test_integer_path_sees_a_changed_ratio_and_mask(trained_resnet20, digits_batches):
    """Packed weights are cached per 4-bit set: switching the ratio inside the block must repack."""
    qmodel = convert_model(trained_resnet20, digits_batches)
    apply_selection(qmodel, create_strategy("range").select(qmodel, LEVELS))
    images = digits_batches[0][:8]
    with torch.no_grad(), integer_execution(qmodel):
        outputs = []
        for ratio in (0, 1.0, 0):
            set_ratio(qmodel, ratio)
            outputs.append(qmodel(images))
    assert torch.equal(outputs[0], outputs[2]) and not torch.equal(outputs[0], outputs[1])
