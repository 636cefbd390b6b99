"""A lighter install for library users: the service parts are extras, the library runs without them,
a command that needs a missing one says which in one line, and listing things imports no torch."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flexiq_search.extras import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter where the extras' modules cannot be imported, as after `pip install flexiq`.
BLOCK_EXTRAS = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(EXTRA_OF_MODULE)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Blocked())
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_the_extras_hold_the_service_and_the_readme_installs_them_all():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    for module, extra in EXTRA_OF_MODULE.items():
        assert module not in core, f"{module} is a core dependency"
        assert any(req.lower().startswith(module) for req in extras[extra]), (module, extra)
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == set(extras) - {"all", "dev"}
    assert '".[all,dev]"' in (ROOT / "Makefile").read_text()  # make demo / make test install everything


def test_listing_models_and_help_import_no_torch():
    """(`import flexiq_search` alone: tests/test_api.py.)"""
    code = ("import sys; from flexiq_search.cli import main; main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'")
    listed = run_python(code, "models")
    assert listed.returncode == 0, listed.stderr
    assert "efficientnet_lite0" in listed.stdout and "resnet20" in listed.stdout
    helped = run_python(code, "--help")  # argparse exits 0 after printing
    assert helped.returncode == 0 and "serve-bench" in helped.stdout, helped.stderr


def test_the_library_runs_without_any_extra(tmp_path):
    code = BLOCK_EXTRAS + f"""
import torch
from torch import nn
import flexiq_search
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
images = torch.randn(32, 3, 16, 16)
fq = flexiq_search.quantize(model, images, samples=32)
fq.select("greedy-error", ratios=[0.5, 1.0])
result = fq.evaluate((images, model(images).argmax(1)))
latency = fq.latency("npu-sim")
assert latency.int8_us > 0 and set(latency.ratios_us) == {{0.5, 1.0}}, latency
print(result.at(0).top1, latency.provenance)
assert not any(m.split(".")[0] in {sorted(EXTRA_OF_MODULE)!r} for m in sys.modules)
"""
    done = run_python("import sys\n" + code)
    assert done.returncode == 0, done.stderr[-2000:]
    top1, provenance = done.stdout.split()[:2]
    assert 0 <= float(top1) <= 100 and provenance == "simulated"


@pytest.mark.parametrize("argv, extra", [(["studies", "list", "--db", "sqlite:///x.db"], "search"),
                                         (["dashboard", "--db", "sqlite:///x.db"], "dashboard")])
def test_a_command_whose_extra_is_missing_says_which_in_one_line(argv, extra, tmp_path):
    code = BLOCK_EXTRAS + "import sys\nfrom flexiq_search.cli import main\nsys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "FLEXIQ_HOME": str(tmp_path)})
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and f"pip install 'flexiq[{extra}]'" in done.stderr, done.stderr
    assert not (tmp_path / "x.db").exists()  # nothing written
