"""The application shell: bare ``convtool``, ``--version``, completion, and the help texts at
80 columns (issue 8, items 10 and 11)."""

from __future__ import annotations

import re

import pytest
from clirun import invoke as cli_invoke

from convtool import __version__
from convtool.cli import convert as convert_command
from convtool.cli import report as report_command
from convtool.cli import sweep as sweep_command
from convtool.cli.app import app



def invoke(*args):
    return cli_invoke(*args, width=80, env={"TERM": "dumb"})


def test_bare_convtool_prints_help_and_succeeds():
    res = invoke()
    assert res.exit_code == 0, res.output
    assert "Usage: convtool" in res.stdout and "convert" in res.stdout and "report" in res.stdout
    assert "error" not in res.output


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"convtool {__version__}"


def test_shell_completion_is_available(monkeypatch):
    import shellingham

    res = invoke("--help")
    assert res.exit_code == 0, res.output
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    # typer detects the shell from the process tree, which a CI runner or a background job may not
    # have ("Shell  not supported"): the shell is given, what is tested is convtool's wiring
    monkeypatch.setattr(shellingham, "detect_shell", lambda *a, **k: ("bash", "/bin/bash"))
    res = cli_invoke("--show-completion", width=80, env={"TERM": "dumb"})
    assert res.exit_code == 0, res.output
    assert "_CONVTOOL_COMPLETE" in res.stdout


@pytest.mark.parametrize("command", ["convert", "report"])
def test_help_at_80_columns_reads_cleanly(command):
    res = invoke(command, "--help")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), text
    prose = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))
    assert not re.search(r"\S \.(\s|$)", prose), "a space before a full stop"  # 'converted model .'
    assert not re.search(r"\S ,", prose), "a space before a comma"
    assert "divided by after" not in prose


def test_convert_help_shows_the_defaults_of_output_and_rank():
    prose = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", invoke("convert", "--help").stdout))
    assert "[default: (<stem>.dws.onnx beside MODEL)]" in prose
    assert re.search(r"--rank -r N\|full .*?\[default: 1\]", prose)
    assert "[default: 1,2,4]" in prose and "[default: 512]" in prose


def test_each_command_is_its_module_function():
    callbacks = {c.name: c.callback for c in app.registered_commands}
    assert callbacks == {"convert": convert_command.convert, "report": report_command.report,
                         "sweep": sweep_command.sweep}


def test_python_dash_m_convtool(monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["convtool", "--version"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("convtool.__main__", run_name="__main__")
    assert done.value.code in (0, None) and __version__ in capsys.readouterr().out
