"""Fixtures of the selection tests: the digits ResNet-20 converted once, and search images."""

import pytest

from flexiq_search.quant.convert import convert_model


@pytest.fixture(scope="module")
def converted(trained_resnet20, digits_batches):
    return convert_model(trained_resnet20, digits_batches)


@pytest.fixture(scope="module")
def images(digits_batches):
    return digits_batches[0]
