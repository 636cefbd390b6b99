"""The Python front door (flexiq_search.quantize): docs/API.md runs as written, typed results, clear errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import flexiq_search
from flexiq_search.errors import FlexiqError

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), re.S)


def test_the_api_page_has_its_examples():
    assert len(BLOCKS) == 2 and "quantize(" in BLOCKS[0] and "quantize(" in BLOCKS[1]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_api_example_runs_as_written(index, tmp_path):
    """Each block in a fresh interpreter, from a checkout-shaped folder (../shared beside it)."""
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    (tmp_path / "repo").mkdir()
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path / "repo", capture_output=True,
                            text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    if index == 0:
        lines = result.stdout.splitlines()
        fp32 = float(lines[0].split()[1])
        top1 = [float(line.rsplit(" ", 1)[1]) for line in lines[1:6]]
        assert fp32 >= 60 and top1[0] >= 60, "real weights on real photos, not chance"
        assert lines[-1] == "[0.25, 0.5, 0.75, 1.0]" and (tmp_path / "repo" / "lite0.flexiq").is_file()


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))  # first and last stay INT8


def test_typed_results_and_ratio_switching():
    model, images = small_model(), torch.randn(16, 3, 8, 8)
    fq = flexiq_search.quantize(model, images, samples=16)
    assert fq.levels == [] and torch.equal(fq(images), fq.quantized(images))
    selection = fq.select("range", ratios=[0.5, 1.0])
    assert fq.levels == [0.5, 1.0] and selection is fq.selection
    result = fq.evaluate((images, model(images).argmax(1)))
    assert isinstance(result, flexiq_search.Evaluation) and result.samples == 16 and result.fp32_top1 == 100.0
    assert [level.ratio for level in result.levels] == [0.0, 0.5, 1.0]
    assert result.at(1.0).mac_share_4bit == 1.0 and result.at(0).mac_share_4bit == 0.0
    fq.set_ratio(1.0)
    all_4bit = fq(images)
    fq.set_ratio(0)
    assert not torch.equal(all_4bit, fq(images)), "the ratio changes what runs"


@pytest.mark.parametrize("call, message", [
    (lambda fq: fq.set_ratio(0.5), "is not a level of the selection"),
    (lambda fq: fq.export("x.flexiq"), "select (or apply) a selection before exporting"),
    (lambda fq: fq.evaluate(torch.randn(4, 3, 8, 8)), "evaluate needs labelled data"),
    (lambda fq: fq.select("no-such-method"), "no-such-method"),
    (lambda fq: flexiq_search.quantize(small_model(), "not a spec at all"), "dataset"),
    (lambda fq: flexiq_search.quantize(small_model(), 3.0), "data must be images"),
])
def test_bad_calls_are_one_clear_error(call, message):
    fq = flexiq_search.quantize(small_model(), torch.randn(4, 3, 8, 8), samples=4)
    with pytest.raises(FlexiqError) as caught:
        call(fq)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_module_without_a_source_cannot_be_exported(tmp_path):
    fq = flexiq_search.quantize(small_model(), torch.randn(4, 3, 8, 8), samples=4)
    fq.select("range", ratios=[1.0])
    with pytest.raises(FlexiqError, match="no source to rebuild it from"):
        fq.export(tmp_path / "m.flexiq")
    assert not (tmp_path / "m.flexiq").exists()


def test_importing_the_package_does_not_load_torch():
    code = "import sys, flexiq_search; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_layer_the_converter_cannot_represent_is_named_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with pytest.raises(FlexiqError) as caught:
        flexiq_search.quantize(model, torch.randn(4, 3, 8, 8), samples=4)
    assert str(caught.value) == "cannot quantize layer '1' (Conv2d): only zero-padded convolutions can be quantized"


def test_the_pipeline_is_written_once():
    """Calibrate-and-convert lives in `quantize` and rebuild-from-stored-values in `restore`: no other
    module of the product converts a model itself (benchmarks may, to measure the pieces)."""
    converting = [str(path.relative_to(ROOT)) for folder in ("flexiq_search", "workers", "kernels", "dashboard")
                  for path in (ROOT / folder).rglob("*.py")
                  if "convert_model(" in path.read_text() and not path.match("flexiq_search/quant/*")
                  and path.name != "api.py"]
    assert converting == []


def test_the_api_and_the_cli_calibrate_on_the_same_images():
    from flexiq_search.data import get_dataset
    from flexiq_search.evaluation import calibration_batches

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    bundle = get_dataset("digits")
    fq = flexiq_search.quantize(model, bundle, samples=40)
    assert torch.equal(fq.calibration_images, torch.cat(calibration_batches(bundle, 40)))
    assert torch.equal(flexiq_search.quantize(model, "digits", samples=40).calibration_images, fq.calibration_images)


def test_export_writes_the_last_evaluations_accuracy(tmp_path):
    """serve-bench reports each level's top-1 from the file: an evaluated model exports it."""
    from flexiq_search.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=3)  # create_model names its source
    images = torch.randn(16, 3, 16, 16)
    fq = flexiq_search.quantize(model, images, samples=16, model_kwargs={"num_classes": 4, "in_chans": 3})
    fq.select("range", ratios=[0.5, 1.0])
    result = fq.evaluate((images, model(images).argmax(1)))
    exported = flexiq_search.FlexiQModel.load(fq.export(tmp_path / "m.flexiq"))
    stored = {float(ratio): top1 for ratio, top1 in exported.manifest["accuracy"].items()}
    assert stored == {level.ratio: level.top1 for level in result.levels} and len(stored) == 3
