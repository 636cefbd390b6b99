"""Device-agnostic code, checked without a GPU.

Under `tensors_without_device_on_meta`, every tensor the library's own code makes without saying
where lands on the `meta` device: mixing it with the real (CPU) tensors fails, or feeds garbage into
the result. So the whole pipeline (convert, select, score, finetune, evaluate) must run under it and
give exactly the results of a normal run: what a CUDA device needs, where nothing may fall back to
the host. (PyTorch's own `set_default_device("meta")` would also catch torch's DataLoader, which
makes its seeds on the default device.) A scan of the source holds the other half: no device is
named outside `flexiq_search/devices.py` and the device-specific latency backends.
"""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from flexiq_search.config import QuantConfig
from flexiq_search.devices import HOST, resolve_device, wants_gpu
from flexiq_search.errors import FlexiqError

ROOT = Path(__file__).resolve().parents[1]
OWN_CODE = (str(ROOT / "flexiq_search"), str(ROOT / "workers"))


class tensors_without_device_on_meta(TorchFunctionMode):
    """Tensors made by flexiq's own code (the factory's immediate caller) without `device=` go to meta."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None \
                and sys._getframe(1).f_code.co_filename.startswith(OWN_CODE):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _pipeline(model, bundle, images, quant: QuantConfig, method: str) -> dict:
    """Every device-sensitive step once: the results a device mix-up would change."""
    from torch.utils.data import Subset

    from flexiq_search.finetune import FinetuneConfig, finetune
    from flexiq_search.quant.convert import convert_model, set_ratio
    from flexiq_search.selection import apply_selection, create_strategy
    from flexiq_search.selection.fitness import FitnessEvaluator, current_masks
    from flexiq_search.training import accuracy

    qmodel = convert_model(model, [images[:32], images[32:]], quant)
    options = {"population": 4, "generations": 1, "validation_share": 0.5} if method == "evolution" else {}
    selection = create_strategy(method, seed=0, **options).select(qmodel, [0.5, 1.0], images)
    apply_selection(qmodel, selection)
    set_ratio(qmodel, 0.5)
    with torch.no_grad():
        logits = qmodel(images[:8])
    fitness = FitnessEvaluator(qmodel, images, metric="kl")(current_masks(qmodel))
    set_ratio(qmodel, 0)
    top1 = accuracy(qmodel, Subset(bundle.test, range(64)), num_classes=10, progress=False)[0]
    bundle = copy.copy(bundle)
    bundle.train = Subset(bundle.train, range(64))
    finetune(qmodel, model, bundle, FinetuneConfig(epochs=1, train_samples=64, batch_size=32), progress=False)
    set_ratio(qmodel, 0.5)
    with torch.no_grad():
        tuned = qmodel(images[:8])
    return {"order": {name: layer.order for name, layer in selection.layers.items()}, "logits": logits,
            "fitness": fitness, "top1": top1, "tuned": tuned}


@pytest.mark.parametrize("quant, method", [
    (QuantConfig(), "greedy-error"),  # the recommended settings: group 1, dynamic shifts, bias correction
    (QuantConfig(), "evolution"),
    (QuantConfig(group_size=8, activation_shift="static", observer="mse", bias_correction=False,
                 keep_depthwise_int8=False), "range"),
])
def test_pipeline_makes_no_tensor_without_a_device(trained_resnet20, digits, quant, method):
    images = torch.stack([digits.train[i][0] for i in range(64)])
    expected = _pipeline(trained_resnet20, digits, images, quant, method)
    with tensors_without_device_on_meta():
        got = _pipeline(trained_resnet20, digits, images, quant, method)
    assert got["order"] == expected["order"]
    assert torch.equal(got["logits"], expected["logits"])
    assert got["fitness"] == expected["fitness"]
    assert got["top1"] == expected["top1"]
    assert torch.equal(got["tuned"], expected["tuned"])


def test_depthwise_and_same_padding_layers_make_no_tensor_without_a_device():
    """EfficientNet-Lite's depthwise convs (scored exactly by their own path) with random weights."""
    from flexiq_search.models import create_model
    from flexiq_search.quant.convert import convert_model, set_ratio
    from flexiq_search.selection import apply_selection, create_strategy

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False).eval()
    images = torch.randn(4, 3, 64, 64)
    quant = QuantConfig(keep_depthwise_int8=False)

    def run():
        qmodel = convert_model(model, [images], quant)
        selection = create_strategy("greedy-error").select(qmodel, [0.5], images)
        apply_selection(qmodel, selection)
        set_ratio(qmodel, 0.5)
        with torch.no_grad():
            return qmodel(images)

    expected = run()
    with tensors_without_device_on_meta():
        got = run()
    assert torch.equal(got, expected)


def test_the_mode_catches_a_tensor_made_without_a_device():
    namespace = {"torch": torch}
    exec(compile("def made():\n    return torch.zeros(2) + torch.ones(2, device='cpu')\n",
                 str(ROOT / "flexiq_search" / "probe.py"), "exec"), namespace)
    with tensors_without_device_on_meta(), pytest.raises(RuntimeError, match="meta"):
        namespace["made"]()
    assert torch.equal(namespace["made"](), torch.ones(2))


def test_resolve_device():
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else HOST)
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == HOST
    with pytest.raises(FlexiqError, match="unknown device 'banana'"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(FlexiqError, match="torch.cuda.is_available"):
            resolve_device("cuda:1")
    assert wants_gpu("auto", 2) and not wants_gpu("auto", 0) and wants_gpu("cuda:1", 0) and not wants_gpu("cpu", 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["evaluate", "--model", "resnet20", "--dataset", "digits", "--device", "cuda"],
    ["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--out", "never.pt", "--device", "cuda:0"],
    ["search", "--model", "resnet20", "--checkpoint", "{checkpoint}", "--dataset", "digits", "--no-ray", "--device",
     "cuda", "--db", "sqlite://"],
])
def test_a_missing_device_is_one_line_and_exit_2(command, resnet20_checkpoint):
    command = [part.format(checkpoint=resnet20_checkpoint) for part in command]
    result = subprocess.run([sys.executable, "-m", "flexiq_search.cli", *command], capture_output=True, text=True,
                            cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "cuda" in result.stderr, result.stderr


DEVICE_NAME = {"cpu", "cuda", "mps"}
# Where naming a device is the point: the device module and the backends that time one device.
NAMES_DEVICES = {"flexiq_search/devices.py", "flexiq_search/latency/gpu.py", "flexiq_search/latency/cpu.py"}


def _device_literals(tree: ast.AST) -> list[int]:
    """Lines that name a device: `.cuda()`, or a device string given where a device goes
    (`device=` / `map_location=`, `.to(...)`, `torch.device(...)`)."""
    def is_device_name(node) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and \
            node.value.split(":")[0] in DEVICE_NAME

    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        attribute = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if attribute == "cuda":
            lines.append(node.lineno)
        if any(k.arg in ("device", "map_location") and is_device_name(k.value) for k in node.keywords):
            lines.append(node.lineno)
        if attribute in ("to", "device") and node.args and is_device_name(node.args[0]):
            lines.append(node.lineno)
    return lines


def test_no_code_names_a_device():
    offenders = []
    for path in sorted([*ROOT.glob("flexiq_search/**/*.py"), *ROOT.glob("workers/**/*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if relative not in NAMES_DEVICES:
            offenders += [f"{relative}:{line}" for line in _device_literals(ast.parse(path.read_text()))]
    assert not offenders, f"device named outside flexiq_search/devices.py: {offenders}"


def test_the_scan_finds_a_named_device():
    found = _device_literals(ast.parse("x.to('cuda')\ny = torch.zeros(2, device='cpu')\nm.cuda()\n"
                                       "torch.device('cuda:1')\nz = x.to(HOST)\n"))
    assert sorted(found) == [1, 2, 3, 4]
