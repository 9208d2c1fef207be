"""Every command the README shows parses as written: its `ssorl ...` subcommand exists, its
`--help` works, and every flag it uses is an option of that command; its Python blocks
compile. A slow test runs the store, split, IDM, relabel, train and eval commands as
written, in the README's order, with only their sizes cut to toy ones."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ssorl_train.cli.main import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def ssorl_commands() -> list[str]:
    """Each `ssorl ...` line of the bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("ssorl "):
                    commands.append(part.replace("[", "").replace("]", ""))
    return commands


def resolve(words: list[str]) -> tuple[list[str], click.Command]:
    """The subcommand path of `words` and the command it names."""
    command: click.Command = cli
    path: list[str] = []
    ctx = click.Context(cli)
    for word in words:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        sub = command.get_command(ctx, word)
        if sub is None:
            break
        command, path = sub, [*path, word]
    return path, command


def test_the_readme_shows_ssorl_commands() -> None:
    assert len(ssorl_commands()) > 15


@pytest.mark.parametrize("line", ssorl_commands())
def test_every_readme_command_parses(line: str) -> None:
    words = shlex.split(line)[1:]
    path, command = resolve(words)
    assert path, line
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, (line, result.output)
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help", "-h"}
    used = {word.split("=")[0] for word in words if word.startswith("-")}
    assert used <= known, (line, used - known)


@pytest.mark.parametrize("block", blocks("python"))
def test_readme_python_blocks_compile(block: str) -> None:
    compile(block, str(README), "exec")


# Sizes cut to toy ones; the command lines are otherwise run as the README writes them.
TOY_SIZES = [
    (" --steps 200000", " --steps 20 --eval-episodes 1 --set hidden_dim=16 --set batch_size=16"),
    (" --episodes 10", " --episodes 1"),
    (" --workers 4", " --workers 1"),
    (" --out idm-p10q50", " --out idm-p10q50 --hidden 16,16 --members 2 --max-steps 20"),
    ("STORE", "hopper-mr"),
]
# Commands that need what a test cannot make here: a full pipeline or sweep run (tested at toy
# size in tests/pipeline), a downloaded Minari dataset, a LeRobot cache, trained SB3 policies.
NOT_RUN = ("ssorl quickstart", "ssorl run ", "mujoco/hopper/expert-v0", "lerobot/user",
           "sb3:")  # fmt: skip


@pytest.mark.slow
def test_readme_data_idm_and_training_commands_run_as_written(tmp_path, monkeypatch) -> None:
    import h5py

    corpus = README.parent.parent / "shared" / "corpus" / "Hopper-v5" / "medium-replay.hdf5"
    if not corpus.exists():
        pytest.skip(f"needs the shared corpus at {corpus}")
    work = tmp_path / "main"
    work.mkdir()
    (tmp_path / "shared").symlink_to(corpus.parents[2])  # ../shared as in a checkout
    with h5py.File(corpus) as source, h5py.File(work / "more.hdf5", "w") as more:
        for key in ("observations", "next_observations", "actions", "rewards", "terminals",
                    "timeouts"):  # fmt: skip
            more[key] = source[key][:3000]
        source.copy("metadata", more)  # the env id and the behaviour policy
    (work / "ids.txt").write_text("0\n1\n")
    (work / "episodes.txt").write_text("0\n1\n")
    (work / "DIR").mkdir()
    monkeypatch.chdir(work)
    ran = []
    for line in ssorl_commands():
        if line.endswith("--help") or any(skip in line for skip in NOT_RUN):
            continue
        if "--extend" in line:  # the README's stale-data section follows an append
            assert CliRunner().invoke(cli, shlex.split(ran[1])[1:]).exit_code == 0
        toy = line
        for long, short in TOY_SIZES:
            toy = toy.replace(long, short)
        result = CliRunner().invoke(cli, shlex.split(toy)[1:])
        assert result.exit_code == 0, (toy, result.output, result.exception)
        ran.append(line)
    assert len(ran) >= 15, ran
