"""Finetuning really recovers accuracy of the 100% 4-bit model, and keeps one INT8 weight set."""

import copy

import torch

from flexiq_search.finetune import FinetuneConfig, finetune
from flexiq_search.quant.convert import convert_model, mixed_layers, set_ratio
from flexiq_search.selection import apply_selection, create_strategy
from flexiq_search.training import accuracy


def test_finetuning_recovers_the_all_4bit_model(trained_resnet20, digits, digits_batches):
    model = convert_model(trained_resnet20, digits_batches)
    apply_selection(model, create_strategy("range").select(model, [0.5, 1.0]))
    before = copy.deepcopy(model)
    set_ratio(before, 1.0)
    acc_before = accuracy(before, digits.test, num_classes=10, progress=False)[0]
    finetune(model, trained_resnet20, digits, FinetuneConfig(epochs=3, lr=1e-3, train_samples=1000, batch_size=64),
             progress=False)
    set_ratio(model, 1.0)
    acc_after = accuracy(model, digits.test, num_classes=10, progress=False)[0]
    assert acc_after > acc_before + 5, (acc_before, acc_after)
    for layer in mixed_layers(model).values():
        assert layer.weight_codes.dtype == torch.int8 and not layer.qat
    for layer in mixed_layers(model, eligible_only=True).values():
        assert layer.boundary == layer.n_groups, "the selection's levels survive finetuning"
