"""Every registered model converts and runs at every ratio (swept over the registry, timm-style)."""

import pytest
import torch
from torch import nn

from flexiq_search.config import QuantConfig
from flexiq_search.errors import FlexiqError
from flexiq_search.models import create_model, get_model_entry, list_models
from flexiq_search.quant.integer import integer_execution
from flexiq_search.quant.convert import convert_model, fold_batchnorm, mac_share_4bit, mixed_layers, set_ratio
from flexiq_search.selection import apply_selection, create_strategy

LEVELS = [0.25, 0.5, 0.75, 1.0]


def small_model(name: str, photos: torch.Tensor) -> nn.Module:
    """A small-input variant whose BatchNorms hold real running statistics, as a trained model's do."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_chans": 3}
    if get_model_entry(name).family == "vit":
        kwargs["img_size"] = 64
    model = create_model(name, **kwargs).train()
    with torch.no_grad():
        model(photos)
    return model.eval()


def test_registry_lists_the_supported_families():
    names = list_models()
    for expected in ("resnet20", "resnet18", "resnet50", "mobilenetv2_100", "efficientnet_lite0", "deit_tiny"):
        assert expected in names
    assert list_models("efficientnet_lite*") == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert list_models("deit*") == ["deit_small", "deit_tiny"]
    with pytest.raises(FlexiqError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(FlexiqError, match="no offline pretrained"):
        create_model("resnet18", pretrained=True)


@pytest.mark.parametrize("name", list_models())
def test_every_model_converts_and_switches_ratio(name, sample_photos):
    model = small_model(name, sample_photos)
    with torch.no_grad():
        reference = model(sample_photos)
    qmodel = convert_model(model, [sample_photos[:4], sample_photos[4:]], QuantConfig())
    layers = mixed_layers(qmodel)
    quantizable = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(quantizable), "every Conv2d/Linear is converted"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules()), "every BatchNorm is folded"
    names = list(layers)
    assert not layers[names[0]].eligible and not layers[names[-1]].eligible
    assert all(layers[n].eligible for n in names[1:-1])
    apply_selection(qmodel, create_strategy("range").select(qmodel, LEVELS))
    errors = []
    with torch.no_grad():
        for ratio in [0] + LEVELS:
            set_ratio(qmodel, ratio)
            out = qmodel(sample_photos)
            assert out.shape == reference.shape and torch.isfinite(out).all()
            with integer_execution(qmodel):  # int8 GEMMs with int32 accumulators: the same logits
                assert torch.equal(qmodel(sample_photos), out), f"integer CPU path differs at {ratio:.0%}"
            errors.append(float((out - reference).square().mean() / reference.square().mean()))
    assert mac_share_4bit(qmodel) == 1.0
    assert errors[0] < 0.05, f"INT8 is close to FP32 ({errors[0]:.4f})"
    assert errors[-1] >= errors[0], "all-4-bit cannot beat INT8 on average"


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_100", "efficientnet_lite0"])
def test_batchnorm_folding_preserves_the_float_function(name, sample_photos):
    model = small_model(name, sample_photos)
    with torch.no_grad():
        before = model(sample_photos)
        folded = fold_batchnorm(model, sample_photos[:2])
        after = model(sample_photos)
    assert folded > 0
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


def test_pretrained_efficientnet_lite0_loads_real_imagenet_weights(sample_photos):
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config
    from PIL import Image

    model = create_model("efficientnet_lite0", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    photos = torch.stack([transform(Image.fromarray(img)) for img in load_sample_images().images])
    with torch.no_grad():
        top5 = model(photos).topk(5).indices
    # ImageNet: china.jpg shows a temple/palace (classes 483 castle, 698 palace, 832 stupa, 668 mosque),
    # flower.jpg a flower (985 daisy, 738 pot, 309 bee, 716 picket fence...). Random weights hit neither.
    assert {483, 698, 832, 668, 538} & set(top5[0].tolist())
    assert {985, 738, 309, 716, 883} & set(top5[1].tolist())
