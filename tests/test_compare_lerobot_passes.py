"""benchmarks/compare_lerobot.py splits our variants into passes that fit in memory beside the reference."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_lerobot.py"
spec = importlib.util.spec_from_file_location("compare_lerobot", SCRIPT)
cl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cl)

OURS = [v for v in cl.VARIANTS if not v.startswith("ref-")]
FULL_GB, MID_GB = 3.52, 0.115  # the fp32 checkpoints' sizes


def test_mid_runs_every_variant_in_one_pass():
    assert cl.plan_passes(OURS, 2, MID_GB / 15) == [OURS]


def test_the_full_size_splits_into_passes_that_each_fit():
    passes = cl.plan_passes(OURS, 2, FULL_GB / 15)
    assert len(passes) > 1
    assert [v for p in passes for v in p] == OURS  # every variant once, in the order asked
    assert all(cl.pass_footprint(p, 2) * FULL_GB <= 15 for p in passes)
    # and no two neighbouring passes could have been one
    assert all(
        cl.pass_footprint(a + b[:1], 2) * FULL_GB > 15 for a, b in zip(passes, passes[1:], strict=False)
    )


def test_shared_fp32_weights_are_counted_once():
    both = cl.pass_footprint(["fp32", "fp32-compiled"], 2)
    assert both == cl.pass_footprint(["fp32-compiled"], 2)
    assert both > cl.pass_footprint(["fp32"], 2)


def test_a_variant_too_large_for_the_memory_still_runs_alone():
    assert cl.plan_passes(["fp32-compiled", "bf16-compiled"], 2, FULL_GB / 4) == [
        ["fp32-compiled"],
        ["bf16-compiled"],
    ]
