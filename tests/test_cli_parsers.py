"""cli/parsers.py (flag text -> values, each error naming its flag) and sweep's option rules
(every sweep option applies or is refused, before any work)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from clirun import invoke

from convtool.cli.parsers import (input_shapes, is_image_folder, parse_budgets, parse_input_shapes, parse_numbers,
                                  parse_rank)
from convtool.errors import OptionError
from convtool.options import RankPolicy

VGG = Path(__file__).resolve().parent.parent / "sample_models" / "vgg_style.onnx"


def test_parse_numbers():
    assert parse_numbers(None, "--x") is None
    assert parse_numbers("0.5, 0.25", "--x") == (0.5, 0.25)
    assert parse_numbers("1,2,4", "--search-ranks", int) == (1, 2, 4)


@pytest.mark.parametrize("text,message", [
    ("", "--x needs at least one value"),
    ("0.05,,0.1", "--x has an empty item in '0.05,,0.1'; separate the values with single commas"),
    ("1,two", "--x must be comma-separated numbers, got '1,two'"),
    ("1,nan", "--x must be finite numbers, got 'nan' in '1,nan'"),
])
def test_parse_numbers_refuses(text, message):
    with pytest.raises(OptionError) as err:
        parse_numbers(text, "--x")
    assert str(err.value) == message


def test_parse_budgets():
    assert parse_budgets("0.1,0.05") == (0.1, 0.05)
    with pytest.raises(OptionError, match=r"^--budgets must be > 0, got 0 \(a budget of 0 allows no drift"):
        parse_budgets("0,0.1")
    with pytest.raises(OptionError, match=r"^--budgets lists 0.1 twice; give each budget once$"):
        parse_budgets("0.1,0.10")


def test_parse_rank():
    assert parse_rank(None, None) == RankPolicy.fixed(1)
    assert parse_rank("FULL", None) == RankPolicy.full()
    assert parse_rank("3", None) == RankPolicy.fixed(3)
    assert parse_rank(None, 0.9) == RankPolicy.energy(0.9)
    for rank, energy, message in [("2", 0.9, "--rank and --energy are mutually exclusive"),
                                  (None, 1.5, "--energy must be in (0, 1], got 1.5"),
                                  ("x", None, "--rank must be a positive integer or 'full', got 'x'"),
                                  ("0", None, "--rank must be >= 1, got 0")]:
        with pytest.raises(OptionError) as err:
            parse_rank(rank, energy)
        assert str(err.value) == message


def test_parse_input_shapes():
    assert parse_input_shapes(["a=1,3,8,8", "b:c=2x4", "s="]) == {"a": (1, 3, 8, 8), "b:c": (2, 4), "s": ()}
    assert input_shapes(None) == () and input_shapes(["x=1,2"]) == (("x", (1, 2)),)
    for spec, message in [("x", "expected NAME=DIMS"), ("x=1,a", "dim 'a' is not an integer"),
                          ("x=1,0", "dims must be positive, got 0")]:
        with pytest.raises(OptionError, match=message):
            parse_input_shapes([spec])
    with pytest.raises(OptionError, match="--input-shape given twice for input 'x'"):
        parse_input_shapes(["x=1", "x=2"])


def test_is_image_folder(tmp_path):
    assert not is_image_folder(None) and not is_image_folder(tmp_path)
    (tmp_path / "a.npy").write_bytes(b"")
    assert not is_image_folder(tmp_path) and not is_image_folder(tmp_path / "a.npy")
    (tmp_path / "b.PNG").write_bytes(b"")
    assert is_image_folder(tmp_path)


# --- sweep's rules (SweepArgs.rules): refused before any work -----------------------------------

@pytest.fixture
def sweep_files(tmp_path) -> list[str]:
    model = tmp_path / "m.onnx"
    shutil.copy(VGG, model)
    np.savez(tmp_path / "eval.npz", input=np.zeros((2, 3, 64, 64), np.float32))
    return ["sweep", str(model), "--inputs", str(tmp_path / "eval.npz"), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("args,message", [
    (["--no-cache", "--cache-dir", "c"], "error: --cache-dir has no effect with --no-cache"),
    (["--finetune"], "error: --finetune needs --calibration DATA (the samples it trains on)"),
    (["--finetune-steps", "5"], "error: --finetune-steps has no effect without --finetune"),
    (["--finetune-seconds", "5"], "error: --finetune-seconds has no effect without --finetune"),
])
def test_sweep_refuses_options_that_cannot_apply(sweep_files, tmp_path, args, message):
    res = invoke(*sweep_files, *args)
    assert res.exit_code == 2, res.output
    assert res.output.strip() == message
    assert not (tmp_path / "out").exists()
