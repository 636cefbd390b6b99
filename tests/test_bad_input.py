"""Bad input, command by command and value class by value class: exit 2, one line on stderr, and
nothing new in the store. The matrix runs `main` in this process (a fresh interpreter per case would
cost minutes of imports); the file cases run as a user does, in a fresh process."""

import base64
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from flexiq_search.cli import main

BAD_FILES = {
    "missing": None,
    "empty": b"",
    "truncated": "head",  # the first kilobyte of a real checkpoint
    "foreign": b"hello, not a checkpoint\n",
    "pickled": "torch.save of an object",  # what a pickled model file (torch.save(model)) looks like to a reader
}


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return resnet20_checkpoint


def bad_file(kind, checkpoint, folder):
    path = folder / f"{kind}.pt"
    content = BAD_FILES[kind]
    if content == "head":
        content = checkpoint.read_bytes()[:1024]
    elif kind == "pickled":
        import torch

        torch.save({"format": "flexiq-checkpoint", "model": ValueError("code, not tensors")}, path)
        return str(path)
    if content is not None:
        path.write_bytes(content)
    return str(path)


def flexiq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=600, cwd=cwd)


def studies(db):
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return list(connection.execute("SELECT name FROM flexiq_studies")) if "flexiq_studies" in tables else []


class InProcess:
    """`main(argv)` as a finished process: returncode and stderr (argparse's exits included)."""

    def __init__(self, argv, capsys):
        try:
            self.returncode = main(argv)
        except SystemExit as exc:
            self.returncode = exc.code
        self.stderr = capsys.readouterr().err


def assert_one_line_exit_2(result, expected):
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr[-1500:]


COMMANDS = {  # the arguments each command needs besides the bad one
    "evaluate": ["--dataset", "digits", "--ratios", "0,0.5", "--samples", "20", "--calibration", "16"],
    "select": ["--dataset", "digits", "--method", "range", "--calibration", "16", "--out", "sel.json"],
    "finetune": ["--dataset", "digits", "--epochs", "1", "--train-samples", "16", "--out", "tuned.pt"],
    "search": ["--no-ray", "--dataset", "digits", "--db", "sqlite:///store.db", "--generations", "1"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_checkpoints(command, kind, checkpoint, tmp_path, monkeypatch, capsys):
    path = bad_file(kind, checkpoint, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert_one_line_exit_2(InProcess([command, "--model", "resnet20", "--checkpoint", path, *COMMANDS[command]],
                                     capsys), "checkpoint")
    assert studies(tmp_path / "store.db") == [] and not (tmp_path / "sel.json").exists()
    assert not (tmp_path / "tuned.pt").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flags, expected", [
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--model", "nosuchpackage.nets:build"], "cannot import nosuchpackage.nets"),
    (["--model", "resnet20", "--dataset", "mnist-ish"], "unknown dataset"),
    (["--model", "resnet20", "--ratios", "1.5"], "ratio 1.5 is outside [0, 1]"),
    (["--model", "resnet20", "--ratios", "abc"], "ratio 'abc' is not a number"),
    (["--model", "resnet20", "--ratios", "nan"], "ratio nan is outside [0, 1]"),
    (["--model", "resnet20", "--observer", "kmeans"], "unknown observer 'kmeans'"),
    (["--model", "resnet20", "--group-size", "0"], "group-size"),
])
def test_bad_names_and_values(command, flags, expected, checkpoint, tmp_path, monkeypatch, capsys):
    args = list(COMMANDS[command])
    for flag in ("--dataset", "--ratios"):
        if flag in flags and flag in args:  # the bad value replaces the good one
            index = args.index(flag)
            del args[index:index + 2]
    if command == "search" and "--observer" in flags:
        expected = "unrecognized arguments: --observer"  # a search config key (tests/test_search.py), not a flag
    checkpoint_args = [] if flags[1] != "resnet20" else ["--checkpoint", str(checkpoint)]
    monkeypatch.chdir(tmp_path)
    assert_one_line_exit_2(InProcess([command, *flags, *checkpoint_args, *args], capsys), expected)
    assert studies(tmp_path / "store.db") == []


@pytest.mark.parametrize("population", ["1", "2"])
def test_a_population_the_evolution_cannot_run_writes_no_study(population, checkpoint, tmp_path):
    result = flexiq("search", "--model", "resnet20", "--checkpoint", str(checkpoint), *COMMANDS["search"],
                    "--population", population, cwd=tmp_path)
    assert_one_line_exit_2(result, "population larger than its elite")
    assert studies(tmp_path / "store.db") == []


@pytest.mark.parametrize("shift", [99, -3, 5])
def test_a_selection_with_shifts_out_of_range_is_refused(shift, checkpoint, tmp_path):
    selection = tmp_path / "sel.json"
    assert main(["select", "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", "digits",
                 "--method", "range", "--calibration", "16", "--out", str(selection)]) == 0
    data = json.loads(selection.read_text())
    layer = next(iter(data["layers"].values()))
    if shift == 5:
        raw = bytearray(base64.b64decode(layer["weight_shift"]))
        raw[0] = shift
        layer["weight_shift"] = base64.b64encode(bytes(raw)).decode()
    else:
        layer["act_shift"][0] = shift
    selection.write_text(json.dumps(data))
    result = flexiq("evaluate", "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", "digits",
                    "--selection", str(selection), "--samples", "20", cwd=tmp_path)
    assert_one_line_exit_2(result, f"extraction shift {shift} is outside 0..4")


def test_an_export_into_a_path_that_cannot_be_written_is_one_line(tmp_path):
    """Whatever the study, a file where a folder should be is refused in one line, nothing left behind."""
    import torch

    import flexiq_search

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    from flexiq_search.models import create_model

    resnet20 = create_model("resnet20", num_classes=10, in_chans=1)  # knows its source, so it can be exported
    model = flexiq_search.quantize(resnet20, torch.randn(8, 1, 8, 8), samples=8)
    model.select("range", ratios=[1.0])
    from flexiq_search.errors import FlexiqError

    with pytest.raises(FlexiqError, match="cannot write .*not-a-folder/m.flexiq"):
        model.export(blocker / "m.flexiq")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


@pytest.fixture(scope="module")
def deit_weights(tmp_path_factory):
    """A DeiT-Tiny state dict (random values): a model whose 16 px patches cannot cover 8 px digits."""
    from safetensors.torch import save_file

    from flexiq_search.models import create_model

    path = tmp_path_factory.mktemp("deit") / "deit.safetensors"
    save_file(create_model("deit_tiny").state_dict(), str(path))
    return path


@pytest.mark.parametrize("command, args", [
    ("train", ["--dataset", "digits", "--epochs", "1", "--out", "deit.pt"]),
    ("evaluate", ["--dataset", "digits", "--ratios", "0", "--samples", "10", "--calibration", "8"]),
    ("search", COMMANDS["search"]),
])
def test_a_model_that_cannot_run_on_the_datasets_images_is_one_line(command, args, deit_weights, tmp_path,
                                                                     monkeypatch, capsys):
    weights = [] if command == "train" else ["--weights", str(deit_weights)]
    monkeypatch.chdir(tmp_path)
    assert_one_line_exit_2(InProcess([command, "--model", "deit_tiny", *weights, *args], capsys),
                           "model deit_tiny cannot run on the 8x8 images of digits")
    assert studies(tmp_path / "store.db") == [] and not (tmp_path / "deit.pt").exists()
