"""Every flag the README's command lines show exists on that command (the docs cannot drift from
the parser). The commands that run on the shared data are run verbatim elsewhere
(tests/test_cli_imagenet.py, tests/models/test_model_sources.py); `flexiq models` runs here."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from flexiq_search.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_command_lines():
    """Each `.venv/bin/flexiq ...` command of the README's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(".venv/bin/flexiq "):
                commands.append(line.split("  #")[0])
    return commands


def options_of(words):
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    sub = action.choices[words[0]]
    nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
    if nested and len(words) > 1 and words[1] in nested[0].choices:
        sub = nested[0].choices[words[1]]
    return {option for a in sub._actions for option in a.option_strings}


def test_every_flag_the_readme_shows_exists():
    lines = readme_command_lines()
    assert len(lines) > 20
    for line in lines:
        words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))[1:]
        known = options_of(words)
        shown = {w.split("=")[0] for w in words if w.startswith("--")}
        assert shown <= known, f"{line}: {sorted(shown - known)} unknown"


def test_the_models_command_runs_verbatim():
    line = next(line for line in readme_command_lines() if line.split()[1] == "models")
    result = subprocess.run([sys.executable, "-m", "flexiq_search.cli", *shlex.split(line)[1:]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.split()[:3] == ["name", "family", "pretrained"]
    assert "efficientnet_lite0" in result.stdout and "package.module:factory" in result.stdout
