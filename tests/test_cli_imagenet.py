"""`flexiq evaluate` on real ImageNet photos with a real pretrained model: label space and calibration split."""

import json

import pytest

from flexiq_search.cli import main

from .conftest import IMAGENET_DEV
from .test_cli import run_cli
from .test_data import SUBSET, imagenet_subset


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return imagenet_subset(tmp_path_factory.mktemp("imagenet") / "dev", SUBSET, 5)


def test_evaluate_scores_a_wnid_subset_and_says_which_images_calibrated(subset):
    result = run_cli("evaluate", "--model", "efficientnet_lite0", "--dataset", f"imagefolder:{subset}",
                     "--ratios", "0,0.25", "--calibration", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    data = report["data"]
    assert report["samples"] == 12 and data["evaluation"]["count"] == 12 and data["calibration"]["count"] == 3
    assert not set(data["calibration"]["items"]) & set(data["evaluation"]["items"])
    assert all(item.split("/")[0] in SUBSET for item in data["evaluation"]["items"])
    assert data["label_space"] == "folder names are the model's label names"
    assert report["fp32"]["top1"] >= 75 and report["fp32"]["top5"] is not None  # real predictions, 1000 classes


def test_calibration_data_from_an_unlabelled_folder_scores_the_whole_dataset(subset, tmp_path, capsys):
    for photo in sorted((subset / SUBSET[1]).iterdir())[:2]:
        (tmp_path / photo.name).symlink_to(photo.resolve())
    assert main(["evaluate", "--model", "efficientnet_lite0", "--dataset", f"imagefolder:{subset}", "--ratios", "0",
                 "--calibration-data", f"imagefolder:{tmp_path}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 15 and report["data"]["calibration"]["items"] == sorted(
        p.name for p in tmp_path.iterdir())
    assert report["data"]["split"].startswith(f"calibration from imagefolder:{tmp_path}")


@pytest.mark.parametrize("case, message", [
    ("unmappable", "cannot be mapped onto the model's 1000 classes"),
    ("unlabelled", "holds unlabelled images"),
])
def test_folders_that_cannot_be_scored_exit_2_in_one_line(case, message, tmp_path, capsys):
    if case == "unmappable":
        imagenet_subset(tmp_path, SUBSET, 1, rename=lambda wnid: "class_" + wnid[-3:])
    else:
        photo = sorted((IMAGENET_DEV / SUBSET[0]).iterdir())[0]
        (tmp_path / photo.name).symlink_to(photo)
    assert main(["evaluate", "--model", "efficientnet_lite0", "--dataset", f"imagefolder:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_the_readmes_imagenet_command_runs_verbatim():
    """The README's evaluate command on the shared ImageNet photos, exactly as written there."""
    import os
    import shlex
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    line = next(line for line in (root / "README.md").read_text().splitlines()
                if line.startswith(".venv/bin/flexiq evaluate") and "imagenet-dev" in line)
    argv = shlex.split(line)
    argv[0] = str(root / argv[0]) if (root / argv[0]).exists() else "flexiq"
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert "60 test samples, calibration 32" in result.stdout and "50% 4-bit" in result.stdout
    fp32 = next(line for line in result.stdout.splitlines() if line.startswith("FP32"))
    assert float(fp32.split()[2]) > 60  # top-1 of the real pretrained model on real photos
