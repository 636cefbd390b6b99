"""`--model` beyond the registry: a timm architecture with real weights from a file, and user code
(`package.module:factory`) whose forward uses functional ops, from the CLI and rebuilt in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flexiq_search.cli import main
from flexiq_search.errors import FlexiqError
from flexiq_search.models import create_model, get_model_entry


USER_MODULE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class PadShortcutNet(nn.Module):
        """A zero-padded channel shortcut (CIFAR ResNet "option A") and a concatenation, both functional."""

        def __init__(self, num_classes, in_chans):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
            self.branch = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
            self.head = nn.Linear(24, num_classes)

        def forward(self, x):
            x = F.relu(self.stem(x))
            y = F.relu(self.conv(x)) + F.pad(x, (0, 0, 0, 0, 4, 4))
            z = torch.cat([y, F.relu(self.branch(y))], 1)
            return self.head(F.adaptive_avg_pool2d(z, 1).flatten(1))


    def build(num_classes=10, in_chans=1):
        return PadShortcutNet(num_classes, in_chans)
''')


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    """The registry's real Lite0 ImageNet weights as a safetensors file, for timm's own architecture name."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    model = create_model("efficientnet_lite0", pretrained=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "padnet.py").write_text(USER_MODULE)
    return folder


def test_sources_resolve_registry_then_import_path_then_timm(user_code, monkeypatch):
    monkeypatch.syspath_prepend(str(user_code))
    assert get_model_entry("efficientnet_lite0").source == "registry"
    assert get_model_entry("resnet34").source == "timm" and get_model_entry("resnet34").family == "cnn"
    assert get_model_entry("vit_tiny_patch16_224").family == "vit"
    assert get_model_entry("padnet:build").source == "import"
    with pytest.raises(FlexiqError, match="cannot import somepackage.models"):
        get_model_entry("somepackage.models:build")
    with pytest.raises(FlexiqError, match="padnet has no attribute 'nothing'"):
        get_model_entry("padnet:nothing")
    with pytest.raises(FlexiqError, match="not a timm architecture, not package.module:factory"):
        get_model_entry("resnet_does_not_exist")


def test_a_timm_model_outside_the_registry_with_weights_from_a_file(lite0_weights):
    """tf_efficientnet_lite0 is timm's name, not a registered one: with the file's weights, the
    same logits as the registry's model."""
    images = torch.randn(2, 3, 224, 224)
    ours = create_model("efficientnet_lite0", pretrained=True).eval()
    theirs = create_model("tf_efficientnet_lite0", pretrained=True, weights=str(lite0_weights)).eval()
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))


@pytest.mark.parametrize("case, message", [
    ("missing", "weights not found"),
    ("empty", "cannot read weights"),
    ("foreign", "weights do not fit tf_efficientnet_lite0"),
    ("pickled", "cannot read weights"),
])
def test_bad_weights_exit_2_in_one_line(case, message, tmp_path, capsys):
    path = tmp_path / "weights.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "foreign":
        torch.save(create_model("resnet20").state_dict(), path)
    elif case == "pickled":
        torch.save({"weights": object()}, path)
    assert main(["evaluate", "--model", "tf_efficientnet_lite0", "--weights", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_timm_model_without_cached_weights_names_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    with pytest.raises(FlexiqError, match="pass --weights PATH"):
        create_model("resnet34", pretrained=True, num_classes=None)


def test_the_readmes_own_model_commands_run_verbatim(user_code, tmp_path):
    """The README's "Your own model" block, line by line as written, from a checkout-shaped folder
    (.venv and ../shared beside it, padnet.py in it); then a checkpoint of user code, read where its
    module does not import, fails in one line."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("## Your own model"):].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 5
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(root.parent / "shared")
    (work / "padnet.py").write_text((user_code / "padnet.py").read_text())
    venv = root / ".venv"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if venv.exists():
        (work / ".venv").symlink_to(venv)
    else:  # CI without a repository venv: the interpreter running the tests has flexiq installed
        (work / ".venv" / "bin").mkdir(parents=True)
        for tool in ("python", "flexiq"):
            (work / ".venv" / "bin" / tool).symlink_to(Path(sys.executable).with_name(tool))
    outputs = []
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=work, capture_output=True, text=True, timeout=900, env=env)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
        outputs.append(result.stdout)
    fp32 = next(line for line in outputs[1].splitlines() if line.startswith("FP32"))
    assert "tf_efficientnet_lite0" in outputs[1] and float(fp32.split()[2]) > 60  # real weights, real photos
    assert "padnet:build on digits" in outputs[2]
    report = outputs[4].splitlines()
    assert next(line for line in report if line.startswith("INT8")) and "100% 4-bit" in outputs[4]
    elsewhere = subprocess.run([str(work / ".venv" / "bin" / "flexiq"), "evaluate", "--model", "padnet:build",
                                "--checkpoint", str(work / "padnet.pt"), "--dataset", "digits", "--ratios", "0"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.strip().splitlines() == [
        "flexiq: error: model padnet:build: cannot import padnet (No module named 'padnet'); run where it is "
        "importable or add its folder to PYTHONPATH"]


def test_a_flexiq_file_of_user_code_serves_where_its_module_imports(user_code, tmp_path, monkeypatch):
    """The .flexiq names `padnet:build`: `flexiq serve-bench` in a fresh process runs it from the
    module's folder and, anywhere else, says in one line what is missing."""
    import flexiq_search

    monkeypatch.syspath_prepend(str(user_code))
    fq = flexiq_search.quantize("padnet:build", torch.randn(16, 1, 8, 8), samples=16)
    fq.select("range", ratios=[0.5, 1.0])
    path = fq.export(tmp_path / "padnet.flexiq")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p != str(user_code)))

    def serve(cwd):
        return subprocess.run([sys.executable, "-m", "flexiq_search.cli", "serve-bench", "--model", str(path),
                               "--slo-ms", "5", "--duration", "1", "--json"], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=600)

    served = serve(user_code)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["requests"] > 0
    elsewhere = serve(tmp_path)
    assert elsewhere.returncode == 2 and len(elsewhere.stderr.strip().splitlines()) == 1
    assert "cannot import padnet" in elsewhere.stderr
