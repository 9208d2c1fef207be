"""Every command the README shows parses as written: its `ssorl ...` subcommand exists, its
`--help` works, and every flag it uses is an option of that command; its Python blocks
compile. (Running the blocks at toy sizes is not done here.)"""

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
