"""The README's measured tables name the script that printed them, and that command still parses.

Every ``python benchmarks/X.py ...`` command in README.md and benchmarks/README.md - inline
(a backticked span, which may wrap across lines) or in a fenced block (``\\`` continuations
joined, ``# comments`` dropped) - must name a script that exists and be a command line the
script accepts: the script's ``main([*ARGS, "--help"])`` exits 0 (argparse converts and checks
every value before it reaches ``--help``), and every ``--flag`` of ARGS is one its help lists
(argparse would only complain about unknown flags after ``--help`` has exited).  One
interpreter parses every command, with ``benchmarks/`` on its import path as when a script runs.
And a table in a section that says it was measured must have a benchmark script named in that
section.  Nothing is measured here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from builders import ROOT

DOCS = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")
INLINE = re.compile(r"`python\s+(benchmarks/[\w-]+\.py)([^`]*)`")
LINE = re.compile(r"^\s*(?:\w+=\S*\s+)*python\s+(benchmarks/[\w-]+\.py)(.*)$")  # PYTHONPATH=. python ...


def _fenced_blocks(text: str) -> list[str]:
    return re.findall(r"```[^\n]*\n(.*?)```", text, re.S)


def commands(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(script, args)`` of every benchmark command in ``path``."""
    text = path.read_text()
    found: list[tuple[str, tuple[str, ...]]] = []
    for block in _fenced_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            m = LINE.match(line)
            if m:
                found.append((m.group(1), tuple(shlex.split(m.group(2), comments=True))))
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    for m in INLINE.finditer(outside):
        found.append((m.group(1), tuple(shlex.split(" ".join(m.group(2).split())))))
    return found


ALL = sorted({(doc.relative_to(ROOT).as_posix(), script, args) for doc in DOCS for script, args in commands(doc)})


# One interpreter parses every command (imports once): each script's main(ARGS + ["--help"]) must
# exit 0, and its help text gives the flags it knows.
_PARSE = """
import contextlib, importlib, io, json, sys
results = []
for script, args in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(script.rsplit("/", 1)[-1][:-3]).main([*args, "--help"])
    except SystemExit as exc:
        code = exc.code or 0
    except Exception as exc:
        code, err = repr(exc), io.StringIO(repr(exc))
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@cache
def parsed() -> dict[tuple[str, tuple[str, ...]], tuple[object, str, str]]:
    """``(script, args) -> (exit code, stdout, stderr)`` of ``main([*args, "--help"])``."""
    todo = sorted({(script, args) for _, script, args in ALL if (ROOT / script).is_file()})
    paths = [str(ROOT / "benchmarks"), str(ROOT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    proc = subprocess.run([sys.executable, "-c", _PARSE], input=json.dumps(todo), cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {key: tuple(r) for key, r in zip(todo, json.loads(proc.stdout.splitlines()[-1]))}


def test_the_readmes_name_benchmark_commands():
    scripts = {script for _, script, _ in ALL}
    # the tables this test exists for: if one of these disappears, the parsing above broke
    assert {"benchmarks/objective.py", "benchmarks/accuracy.py", "benchmarks/speed.py"} <= scripts, scripts


@pytest.mark.parametrize(("doc", "script", "args"), ALL, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_benchmark_command_parses(doc, script, args):
    assert (ROOT / script).is_file(), f"{doc} names {script}, which does not exist"
    code, out, err = parsed()[(script, args)]
    command = f"`python {script} {' '.join(args)}`"
    assert code == 0 and "usage:" in out, f"{doc}: {command} is refused ({code}):\n{err}"
    known = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", out))
    unknown = sorted({a.split("=", 1)[0] for a in args if a.startswith("--")} - known)
    assert not unknown, f"{doc}: {command}: {unknown} not in the script's --help"


def _measured_tables(text: str) -> list[tuple[str, str]]:
    """(section so far, header row) of every table whose section - the text since the last
    ``#``-``###`` heading, that heading, code blocks and earlier tables included - says it was
    measured."""
    out = []
    section: list[str] = []
    in_table = in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,3} ", line):
            section = []
        if not in_code and line.startswith("|") and not in_table:
            if re.search(r"\bmeasured\b", " ".join(section), re.I):
                out.append((" ".join(section), line))
        in_table = not in_code and line.startswith("|")
        section.append(line)
    return out


def _names_script(section: str) -> bool:
    """``benchmarks/X.py``, or a backticked ``X.py`` of benchmarks/, that exists."""
    names = re.findall(r"benchmarks/([\w-]+\.py)", section) + re.findall(r"`([\w-]+\.py)\b", section)
    return any((ROOT / "benchmarks" / n).is_file() for n in names)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_measured_tables_name_their_script(doc):
    missing = [header for section, header in _measured_tables(doc.read_text()) if not _names_script(section)]
    assert not missing, f"{doc.name}: measured tables with no benchmark script in their section: {missing}"
