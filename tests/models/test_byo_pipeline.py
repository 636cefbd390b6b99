"""Models outside the registry through the whole pipeline (issue 14), from Python and from the CLI:
quantize -> select -> evaluate -> export -> serve-bench, for timm's resnet34, mobilenetv3_small_100 and
vit_tiny_patch16_224 (built at 32 px), and user code named `package.module:factory` whose forward
pads a strided shortcut (CIFAR ResNet "option A") and concatenates branches with functional ops.

Weights are random (nothing is downloaded), images small (8-32 px) and few. The timm models get their
weights as a safetensors file or a flexiq checkpoint, as a user without a model hub would give them.
"""

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import flexiq_search
from flexiq_search.cli import main
from flexiq_search.data import get_dataset
from flexiq_search.errors import FlexiqError
from flexiq_search.models import create_model, save_checkpoint
from flexiq_search.quant.convert import mac_share_4bit, set_ratio

IMAGENET_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet-dev"
USER_SOURCE = "byo_models.padnet:build"
LEVELS = [0.5, 1.0]
POLICIES = ["adaptive", "int8", "int4"]

PADNET = textwrap.dedent('''
    """A CIFAR-style ResNet with option-A shortcuts and a concatenating head, all functional."""

    import torch
    import torch.nn.functional as F
    from torch import nn


    class OptionABlock(nn.Module):
        """Basic block whose shortcut subsamples by slicing and zero-pads the new channels (F.pad)."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.stride != 1 or self.extra:
                half = self.extra // 2
                shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, half, self.extra - half))
            return F.relu(out + shortcut)


    class PadCatNet(nn.Module):
        def __init__(self, num_classes, in_chans):
            super().__init__()
            self.stem = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.block1 = OptionABlock(16, 16, 1)
            self.block2 = OptionABlock(16, 32, 2)
            self.branch1 = nn.Conv2d(32, 16, 1)
            self.branch3 = nn.Conv2d(32, 16, 3, padding=1)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.block2(self.block1(F.relu(self.bn(self.stem(x)))))
            x = torch.cat([x, F.relu(self.branch1(x)), F.relu(self.branch3(x))], dim=1)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


    def build(num_classes=10, in_chans=3):
        return PadCatNet(num_classes, in_chans)
''')

# Each conversion of resnet34 or the ViT costs 10-30 s on a busy machine (resnet34 has 21M weights), and
# measuring selections (greedy-error, evolution) a few more, so the expensive steps are spread: every
# model goes through every stage once, not through every stage from both front doors.
# source -> (factory keyword arguments, selection method and options)
PYTHON_CASES = {
    "resnet34": ({}, "range", {}),
    "mobilenetv3_small_100": ({}, "greedy-error", {}),
    "vit_tiny_patch16_224": ({"img_size": 32}, "range", {}),
    USER_SOURCE: ({"num_classes": 10, "in_chans": 1}, "evolution", {"population": 4, "generations": 1}),
}
# source -> (selection method, CLI stages: "evaluate" (selecting inside), "select" (then evaluate
# --selection), "study" (also search -> export -> serve-bench))
CLI_CASES = {
    USER_SOURCE: ("evolution", "study"),
    "mobilenetv3_small_100": ("greedy-error", "study"),
    "resnet34": ("range", "evaluate"),
    "vit_tiny_patch16_224": ("greedy-error", "select"),
}


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """`byo_models/padnet.py`, a package on the path for this module's tests (in-process CLI too)."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "byo_models").mkdir()
    (folder / "byo_models" / "__init__.py").write_text("")
    (folder / "byo_models" / "padnet.py").write_text(PADNET)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Six ImageNet classes (wnid folders), four real photos each: labels in the 1000-class head's space."""
    if not IMAGENET_DEV.is_dir():
        pytest.skip(f"{IMAGENET_DEV} is not here")
    root = tmp_path_factory.mktemp("photos")
    for wnid in sorted(p.name for p in IMAGENET_DEV.iterdir() if p.is_dir())[:6]:
        (root / wnid).mkdir()
        for photo in sorted((IMAGENET_DEV / wnid).iterdir())[:4]:
            shutil.copy(photo, root / wnid / photo.name)
    return root


@pytest.fixture(scope="module")
def small_photos(sample_photos):
    """Eight real photo crops at 32 px (the CNNs take any size)."""
    return F.interpolate(sample_photos, size=32, mode="bilinear", antialias=True)


def random_weights(folder: Path, source: str, **kwargs) -> Path:
    """A seeded random initialization as a safetensors file: `--weights` for a timm name."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = folder / f"{source}.safetensors"
    save_file({k: v.contiguous() for k, v in create_model(source, **kwargs).state_dict().items()}, str(path))
    return path


def serve_bench(path: Path, capsys) -> dict:
    """`flexiq serve-bench --json` on an exported file: exit 0 and one run per policy, with requests."""
    assert main(["serve-bench", "--model", str(path), "--slo-ms", "5", "--duration", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [run["policy"] for run in result["runs"]] == POLICIES
    assert result["requests"] > 0 and result["switch_us"] > 0
    assert all(run["requests"] == result["requests"] and run["p50_ms"] > 0 for run in result["runs"])
    return result


@pytest.mark.parametrize("source", list(PYTHON_CASES))
def test_python_quantize_select_evaluate_export_serve(source, user_code, photo_folder, small_photos, digits,
                                                       tmp_path, capsys):
    """`flexiq_search.quantize(source, ...)` -> select -> set_ratio -> evaluate -> export; the file
    rebuilds the same model from its source and `flexiq serve-bench` serves it."""
    kwargs, method, options = PYTHON_CASES[source]
    if source == USER_SOURCE:  # user code: the factory's own random init; scikit-learn's digits
        fq = flexiq_search.quantize(source, "digits", samples=16, **kwargs)
        labelled, probe = "digits", torch.stack([digits.test[i][0] for i in range(4)])
    elif source.startswith("vit"):  # a 32-px ViT on a folder of photos, which is read at 32 px
        spec = f"imagefolder:{photo_folder}"
        fq = flexiq_search.quantize(source, spec, samples=8, weights=random_weights(tmp_path, source, **kwargs),
                                    **kwargs)
        labelled, probe = spec, torch.stack([get_dataset(spec, model=fq.float_model).test[i][0] for i in range(4)])
        assert fq.input_shape[1:] == [3, 32, 32]
    else:  # labels: the float model's own answers on the photos
        fq = flexiq_search.quantize(source, small_photos, samples=8, weights=random_weights(tmp_path, source))
        with torch.no_grad():
            labelled, probe = (small_photos, fq.float_model(small_photos).argmax(1)), small_photos[:4]

    selection = fq.select(method, ratios=LEVELS, **options)
    assert fq.levels == LEVELS and selection.method == method
    shares, logits = [], []
    for ratio in [0.0, *LEVELS]:
        fq.set_ratio(ratio)
        shares.append(mac_share_4bit(fq.quantized))
        with torch.no_grad():
            logits.append(fq(probe))
    assert shares[0] == 0 and shares[1] == pytest.approx(0.5, abs=0.05) and shares[2] == 1.0
    assert not torch.equal(logits[0], logits[2]), "all-4-bit computes something else than INT8"
    with pytest.raises(FlexiqError, match="not a level"):
        fq.set_ratio(0.3)

    result = fq.evaluate(labelled, samples=16)
    assert [level.ratio for level in result.levels] == [0.0, *LEVELS]
    assert [level.mac_share_4bit for level in result.levels] == pytest.approx(shares)
    for top1 in [result.fp32_top1, *(level.top1 for level in result.levels)]:
        assert isinstance(top1, float) and 0 <= top1 <= 100
    if isinstance(labelled, tuple):
        assert result.fp32_top1 == 100, "scored against the float model's own answers"

    path = fq.export(tmp_path / "model.flexiq", accuracy={level.ratio: level.top1 for level in result.levels})
    if source != "resnet34":  # its rebuild costs most; serve-bench below still rebuilds and runs every level
        exported = flexiq_search.FlexiQModel.load(path)
        assert exported.manifest["model"] == source and exported.levels == LEVELS
        assert all(exported.manifest["model_kwargs"].get(k) == v for k, v in kwargs.items())
        for ratio, expected in zip([0.0, *LEVELS], logits):  # rebuilt from its source, every value from the file
            set_ratio(exported.qmodel, ratio)
            with torch.no_grad():
                assert torch.allclose(exported.qmodel(probe), expected, rtol=1e-5, atol=1e-5), ratio
    served = serve_bench(path, capsys)
    assert all(0 <= run["mean_accuracy"] <= 100 for run in served["runs"])


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    """A flexiq checkpoint of timm's vit_tiny_patch16_224 built at 32 px (1000 classes, random weights)."""
    torch.manual_seed(0)
    kwargs = {"img_size": 32}
    path = tmp_path_factory.mktemp("vit") / "vit32.pt"
    save_checkpoint(path, create_model("vit_tiny_patch16_224", **kwargs), model_name="vit_tiny_patch16_224",
                    model_kwargs=kwargs, dataset="imagenet")
    return path


def cli_json(capsys, *args) -> dict:
    assert main([*args, "--json"]) == 0, args
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("source", list(CLI_CASES))
def test_cli_select_evaluate_search_export_serve(source, user_code, photo_folder, vit_checkpoint, tmp_path, capsys):
    """The commands a user types: a checkpoint (`flexiq train` on digits, or the 32-px ViT's on photos),
    then select -> evaluate, and for user code and mobilenetv3 a search study (tiny, in-process) ->
    export of its trial -> serve-bench."""
    method, stages = CLI_CASES[source]
    if source == "vit_tiny_patch16_224":
        checkpoint, dataset = str(vit_checkpoint), f"imagefolder:{photo_folder}"
    else:
        checkpoint, dataset = str(tmp_path / "model.pt"), "digits"
        trained = cli_json(capsys, "train", "--model", source, "--dataset", dataset, "--epochs", "1",
                           "--train-samples", "32", "--out", checkpoint)
        assert 0 <= trained["top1"] <= 100
    model = ["--model", source, "--checkpoint", checkpoint, "--dataset", dataset]
    chosen = ["--method", method]
    if stages != "evaluate":
        selection = tmp_path / "selection.json"
        selected = cli_json(capsys, "select", *model, "--calibration", "8", "--method", method, "--ratios", "0.5,1",
                            "--population", "4", "--generations", "1", "--out", str(selection))
        assert selected["method"] == method and [level["ratio"] for level in selected["levels"]] == LEVELS
        assert [level["mac_share_4bit"] for level in selected["levels"]] == pytest.approx(LEVELS, abs=0.05)
        chosen = ["--selection", str(selection)]

    report = cli_json(capsys, "evaluate", *model, *chosen, "--calibration", "8", "--ratios", "0,0.5,1",
                      "--samples", "16")
    assert report["method"] == method and report["model"] == source and report["samples"] == 16
    assert [row["mac_share_4bit"] for row in report["ratios"]] == pytest.approx([0.0, *LEVELS], abs=0.05)
    for top1 in [report["fp32"]["top1"], report["int8"]["top1"], *(row["top1"] for row in report["ratios"])]:
        assert 0 <= top1 <= 100
    if stages != "study":
        return

    db = f"sqlite:///{tmp_path / 'studies.db'}"
    assert main(["search", "--no-ray", *model, "--backends", "npu-sim", "--ratios", "0.5,1", "--calibration", "8",
                 "--eval-samples", "16", "--population", "4", "--generations", "1", "--name", "byo",
                 "--db", db]) == 0
    capsys.readouterr()
    exported = cli_json(capsys, "export", "--study", "byo", "--out", str(tmp_path / "m.flexiq"), "--db", db)
    assert exported["levels"] == LEVELS and set(exported["accuracy"]) == {"0.0", "0.5", "1.0"}
    assert all(0 <= top1 <= 100 for top1 in exported["accuracy"].values())
    served = serve_bench(Path(exported["path"]), capsys)
    int8 = next(run for run in served["runs"] if run["policy"] == "int8")
    assert int8["mean_accuracy"] == exported["accuracy"]["0.0"], "served with the study's measured top-1"


def test_an_image_folder_is_read_at_the_size_a_vit_was_built_for(photo_folder):
    """timm keeps a ViT's 224-px pretrained config when it is built with `img_size=32`: the folder's
    transform follows the model (it fed 224-px images: "Input height (224) doesn't match model (32)")."""
    model = create_model("vit_tiny_patch16_224", img_size=32).eval()
    bundle = get_dataset(f"imagefolder:{photo_folder}", model=model)
    image, label = bundle.test[0]
    assert image.shape == (3, 32, 32) and bundle.image_size == 32 and 0 <= label < 1000
    with torch.no_grad():
        assert model(image[None]).shape == (1, 1000)
    assert get_dataset(f"imagefolder:{photo_folder}", model=create_model("resnet34")).test[0][0].shape == (3, 224, 224)
