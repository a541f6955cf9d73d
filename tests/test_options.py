"""options.py: frozen option objects, validated at construction with one-line OptionErrors that
name the flag a CLI user would change."""

from __future__ import annotations

import dataclasses

import pytest

from convtool.errors import ConvToolError, OptionError
from convtool.options import (
    CalibrationOptions,
    ConvertOptions,
    ImagePreprocess,
    LatencyOptions,
    RankPolicy,
    SelectRules,
    SessionOptions,
)


def refused(build, match: str) -> OptionError:
    with pytest.raises(OptionError, match=match) as exc:
        build()
    message = str(exc.value)
    assert "\n" not in message and isinstance(exc.value, ConvToolError)
    return exc.value


# --- RankPolicy ----------------------------------------------------------------------------------

def test_rank_policy_forms_and_descriptions():
    assert RankPolicy() == RankPolicy("fixed", 1) == RankPolicy.fixed(1)
    assert RankPolicy.full() == RankPolicy("full", 0)
    assert RankPolicy.energy(0.9) == RankPolicy("energy", 0.9)
    assert RankPolicy.fixed(3).describe() == "rank 3"
    assert RankPolicy.full().describe() == "full rank (exact)"
    assert RankPolicy.energy(0.9).describe() == "energy >= 0.9"
    assert RankPolicy.energy(1.0).value == 1.0  # all of the energy is allowed


@pytest.mark.parametrize("kind,value,match", [
    ("fixed", 0, r"rank must be a positive integer, got 0"),
    ("fixed", 1.5, r"rank must be a positive integer, got 1.5"),
    ("fixed", True, r"rank must be a positive integer, got True"),
    ("energy", 0.0, r"energy must be in \(0, 1\], got 0.0"),
    ("energy", 1.5, r"energy must be in \(0, 1\], got 1.5"),
    ("exact", 1, r"RankPolicy kind must be one of fixed, full, energy, got 'exact'"),
])
def test_rank_policy_refuses(kind, value, match):
    refused(lambda: RankPolicy(kind, value), match)


def test_rank_policy_with_a_number_as_kind_says_what_to_write():
    err = refused(lambda: RankPolicy(2), "got 2")  # type: ignore[arg-type]
    assert "write RankPolicy('fixed', 2)" in str(err)


# --- ConvertOptions ------------------------------------------------------------------------------

def test_convert_options_defaults_and_derived_views():
    opts = ConvertOptions(min_in_channels=4, include=("a",), exclude=("b",), fold_batchnorm=False,
                          input_shapes=(("x", (1, 3, 8, 8)),))
    assert opts.rank == RankPolicy.fixed(1) and opts.check
    assert opts.latency_aware is None and opts.calibration is None and opts.max_drift is None
    assert opts.select_rules == SelectRules(4, ("a",), ("b",), False)
    assert opts.input_shape_map == {"x": (1, 3, 8, 8)}
    assert opts.calibration_or_default == CalibrationOptions()
    cal = CalibrationOptions(holdout=0.5)
    assert ConvertOptions(calibration=cal).calibration_or_default is cal


@pytest.mark.parametrize("kwargs,match", [
    (dict(rank=2), r"rank must be a RankPolicy, got 2"),
    (dict(max_drift=-0.1), r"--max-drift must be >= 0"),
    (dict(max_drift=float("nan")), r"--max-drift must be >= 0"),
    (dict(metric="top5"), r"--metric must be one of rel_l2, top1"),
    (dict(search_ranks=()), r"search ranks must be positive integers"),
    (dict(search_ranks=(1, 0)), r"search ranks must be positive integers"),
    (dict(min_in_channels=0), r"--min-in-channels must be >= 1"),
    (dict(layout="diagonal"), r"--layout must be one of multiplier, repeat, branches, pointwise_first, auto"),
    (dict(include=("(",)), r"invalid regular expression '\('"),
    (dict(exclude=("[a",)), r"invalid regular expression '\[a'"),
])
def test_convert_options_refuse(kwargs, match):
    refused(lambda: ConvertOptions(**kwargs), match)


@pytest.mark.parametrize("options", [
    RankPolicy(), ConvertOptions(), SessionOptions(), ImagePreprocess(), CalibrationOptions(), LatencyOptions(),
    SelectRules(),
], ids=lambda o: type(o).__name__)
def test_options_are_frozen(options):
    field = dataclasses.fields(options)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(options, field, getattr(options, field))


# --- sessions, calibration, images, latency ------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(threads=0), r"--threads must be >= 1, got 0"),
    (dict(opt_level="max"), r"--opt-level must be one of disable, basic, extended, all"),
    (dict(providers=()), r"at least one execution provider"),
])
def test_session_options_refuse(kwargs, match):
    refused(lambda: SessionOptions(**kwargs), match)


def test_session_options_defaults():
    s = SessionOptions()
    assert (s.threads, s.opt_level, s.spinning, s.providers) == (1, "all", False, ("CPUExecutionProvider",))
    assert SessionOptions(threads=None).threads is None  # onnxruntime's default, for calibration runs


@pytest.mark.parametrize("kwargs,match", [
    (dict(holdout=1.0), r"--holdout must be in \[0, 1\)"),
    (dict(holdout=-0.1), r"--holdout must be in \[0, 1\)"),
    (dict(max_samples=0), r"--calibration-samples must be >= 1"),
    (dict(batch_size=0), r"calibration batch size must be >= 1"),
    (dict(max_positions=-1), r"max_positions must be >= 0"),
])
def test_calibration_options_refuse(kwargs, match):
    refused(lambda: CalibrationOptions(**kwargs), match)


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=(0, 8)), r"--image-size must be HEIGHT,WIDTH with positive values"),
    (dict(size=(8,)), r"--image-size must be HEIGHT,WIDTH"),
    (dict(layout="CHW"), r"--image-layout must be NCHW or NHWC"),
    (dict(channel_order="RGBA"), r"--channel-order must be RGB, BGR or L"),
    (dict(mean=()), r"--image-mean and --image-std need at least one value"),
    (dict(std=(0.5, 0.0)), r"--image-std values must be > 0"),
])
def test_image_preprocess_refuses(kwargs, match):
    refused(lambda: ImagePreprocess(**kwargs), match)


@pytest.mark.parametrize("kwargs,match", [
    (dict(threads=0), r"--threads must be >= 1"),
    (dict(opt_level="fast"), r"--opt-level must be one of"),
    (dict(margin=-0.1), r"latency margin must be in \[0, 1\)"),
    (dict(margin=1.0), r"latency margin must be in \[0, 1\)"),
    (dict(min_runs=2), r"latency-aware runs must be >= 3"),
    (dict(min_runs=20, max_runs=10), r"max_runs >= min_runs"),
    (dict(confirm_runs=2), r"latency-aware runs must be >= 3"),
])
def test_latency_options_refuse(kwargs, match):
    refused(lambda: LatencyOptions(**kwargs), match)


def test_latency_sessions_are_the_deployment_settings_without_spinning():
    s = LatencyOptions(threads=4, opt_level="basic").session
    assert s == SessionOptions(threads=4, opt_level="basic", spinning=False)
