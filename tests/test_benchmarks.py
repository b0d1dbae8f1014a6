"""Tests of the benchmark scripts' parts: they are run by hand, so these keep them from rotting.
Nothing here times anything: the rows run for a fraction of a second and only their bookkeeping
(FLOPs, overrides, names) is checked."""

import sys
from pathlib import Path

import pytest

from config import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import train_throughput as tt  # noqa: E402  (benchmarks/ is not a package)


def test_apply_overrides_parses_each_field_as_its_type():
    cfg = tt.apply_overrides(get_preset("tiny"), ["model.patch_size=2", "train.lr=3e-3",
                                                  "train.ema_warmup=false"])
    assert cfg.model.patch_size == 2 and isinstance(cfg.model.patch_size, int)
    assert cfg.train.lr == 3e-3
    assert cfg.train.ema_warmup is False


def test_apply_overrides_checks_the_combination_not_each_step():
    # The cpu preset has 6 heads: width 64 alone would not divide, width 64 with 4 heads does.
    cfg = tt.apply_overrides(get_preset("cpu"), ["model.hidden_size=64", "model.num_heads=4"])
    assert (cfg.model.hidden_size, cfg.model.num_heads) == (64, 4)
    with pytest.raises(SystemExit, match="not divisible"):
        tt.apply_overrides(get_preset("cpu"), ["model.hidden_size=64"])


@pytest.mark.parametrize("item, message", [
    ("model.patch_size", "section.field=value"),
    ("model.no_such_field=1", "section.field=value"),
    ("nosection.x=1", "section.field=value"),
    ("preset.x=1", "section.field=value"),  # a field of Config, not a section
    ("model.patch_size=2.5", "invalid literal"),
    ("train.ema_warmup=maybe", "true or false"),
    ("model.patch_size=5", "does not divide"),  # the section's own check runs
])
def test_apply_overrides_rejects_bad_items(item, message):
    with pytest.raises(SystemExit, match=message):
        tt.apply_overrides(get_preset("tiny"), [item])


def test_rows_count_more_flops_for_smaller_patches_and_name_themselves():
    """Patch 2 gives 196 tokens instead of 16: many more FLOPs per image, for both implementations."""
    p7 = tt.run_row("tiny", "off", False, False, [], "cpu", seconds=0.0)
    p2 = tt.run_row("tiny", "off", False, False, ["model.patch_size=2"], "cpu", seconds=0.0)
    naive = tt.run_row("tiny", "off", True, False, ["model.patch_size=2"], "cpu", seconds=0.0)
    assert p7["preset"] == "tiny" and p2["preset"] == "tiny*" and naive["preset"] == "tiny* (naive)"
    assert p2["gflop_per_image"] > 5 * p7["gflop_per_image"]
    # The naive model does the same maths, so the FLOP counter sees about the same work: the
    # fused attention's backward also recomputes the N x N matrix, which it counts (the default's
    # shape at patch 2 measured 0.370 against 0.350 GFLOP per image).
    assert naive["gflop_per_image"] == pytest.approx(p2["gflop_per_image"], rel=0.1)
    assert p7["images_per_sec"] > 0


def test_each_lever_changes_exactly_one_setting_of_the_default():
    import dataclasses

    import levers
    import train

    def settings(flags):
        cfg = train.config_from_args(train.build_parser().parse_args(flags))
        return {**dataclasses.asdict(cfg.train), **dataclasses.asdict(cfg.model)}

    default = settings([])
    for name, (flags, _) in levers.LEVERS.items():
        changed = {k for k, v in settings(flags).items() if v != default[k]}
        assert len(changed) == (0 if name == "default" else 1), (name, changed)
    assert len({levers.slug(name) for name in levers.LEVERS}) == len(levers.LEVERS)
