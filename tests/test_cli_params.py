"""The typed option groups of :mod:`convtool.cli.params` (issue 17, item 1): each group owns its
flags, validation, rules and option objects; a command lists its groups and reads typed
attributes, never a dict keyed by flag name."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from convtool.cli import params
from convtool.cli.convert import ConvertArgs
from convtool.cli.convert import convert as convert_callback
from convtool.cli.report import ReportArgs
from convtool.cli.report import report as report_callback
from convtool.cli.sweep import SweepArgs
from convtool.cli.sweep import sweep as sweep_callback
from convtool.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = [(ConvertArgs, convert_callback), (ReportArgs, report_callback), (SweepArgs, sweep_callback)]


@pytest.mark.parametrize("args,callback", COMMANDS)
def test_a_command_s_parameters_are_its_groups_fields_in_order(args, callback):
    names = [f.name for g in args.groups().values() for f in dataclasses.fields(g)]
    assert len(names) == len(set(names))  # no flag is declared by two groups
    signature = inspect.signature(callback)
    assert list(signature.parameters)[1:] == names
    assert all(issubclass(g, params.Group) for g in args.groups().values())


def test_groups_are_frozen_and_build_from_the_callback_values():
    session = params.SessionFlags.take({"threads": 2, "opt_level": "basic", "provider": None, "unrelated": 1})
    assert (session.threads, session.opt_level) == (2, "basic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.threads = 3  # type: ignore[misc]
    assert session.options().providers == ("CPUExecutionProvider",)
    timing = session.timing(params.CacheFlags(cache_dir=Path("c"), no_cache=False))
    assert (timing.threads, timing.cache_dir, timing.use_cache) == (2, "c", True)


def test_group_builders_validate():
    with pytest.raises(OptionError, match="--opt-level must be one of"):
        params.SessionFlags(opt_level="foo").options()
    with pytest.raises(OptionError, match="--quantize must be int8"):
        params.QuantizeFlags(quantize="int4").options()
    assert params.FinetuneFlags().options() is None
    assert params.CalibrationFlags().options(params.ImageFolder()) is None
    assert params.CalibrationFlags().options(params.ImageFolder(), search=True).source is None


def test_group_rules_are_computed_from_typed_values():
    budget = params.BudgetFlags(max_drift=0.1)
    rank_rules = params.RankFlags(energy=0.9).rules(budget)
    assert [r.holds for r in rank_rules] == [False, False]
    assert params.BudgetFlags().rules()[0].holds is False and budget.rules()[0].holds is True
    calibration = params.CalibrationFlags()
    assert [r.holds for r in params.FinetuneFlags(finetune=True).rules(calibration)] == [False, True]


def test_no_flag_value_is_read_by_its_name():
    pattern = re.compile(r"""\bp\[["']|params\.get\(|ctx\.params""")
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "convtool").rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def _defaults(args):
    """A command's arguments with every flag at its default (required ones given a path)."""
    groups = {}
    for name, g in args.groups().items():
        required = {f.name: Path("x.onnx") for f in dataclasses.fields(g) if f.default is dataclasses.MISSING}
        groups[name] = g(**required)
    return args(**groups)


@pytest.mark.parametrize("args,callback", COMMANDS)
def test_every_rule_names_a_parameter_of_its_command(args, callback):
    parameters = set(inspect.signature(callback).parameters)
    defaults = _defaults(args)
    rules = list(defaults.rules())
    if args is ReportArgs:
        rules += defaults.int8.rules(defaults.paths)
    named = {name for rule in rules for name in rule.options}
    assert named and named <= parameters, named - parameters
