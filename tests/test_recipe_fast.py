"""experiment=gpt_pydoc_fast (issue 23's recipe for the text member) and benchmarks/time_to_loss.py's bookkeeping."""

from __future__ import annotations

import math

import pytest
from helpers import TINY, compose_train, loss_recorder
from test_bench import bench_script

from zoo.train import run


def test_gpt_pydoc_fast_composes_to_the_recipe_and_trains(tmp_path):
    cfg = compose_train(["experiment=gpt_pydoc_fast", *TINY, "trainer.max_steps=2", "trainer.val_check_interval=2",
                         f"run_dir={tmp_path}"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.module.lr) == ("muon", 0.02, 6e-3)
    assert (cfg.module.schedule, cfg.module.decay_fraction) == ("wsd", 0.4)
    record = loss_recorder()
    summary = run(cfg, extra_callbacks=[record])
    assert sorted(record.losses) == [1, 2] and all(math.isfinite(v) for v in record.losses.values())
    assert math.isfinite(summary["metrics"]["val/loss"])


def test_time_to_loss_reads_nanogpt_iteration_times_and_first_crossings():
    ttl = bench_script("time_to_loss")
    log = "\n".join(["step 0: train loss 4.5, val loss 4.5", "iter 0: loss 4.5, time 900.00ms, mfu -100.00%",
                     "iter 1: loss 4.0, time 10.00ms, mfu 0.01%", "iter 2: loss 3.5, time 30.00ms, mfu 0.01%",
                     "step 3: train loss 3.0, val loss 3.1", "iter 3: loss 3.0, time 500.00ms, mfu 0.01%"])
    t = ttl.nanogpt_iteration_times(log, steps=3)  # the checkpoint at 3 holds iterations 0-2; 0 ran an evaluation
    assert t["train_s"] == pytest.approx(0.010 + 0.030 + 0.020) and t["evaluated_iterations"] == [0, 3]
    with pytest.raises(RuntimeError, match="2 of 3 iteration times"):
        ttl.nanogpt_iteration_times(log.replace("iter 1:", "it 1:"), steps=3)
    curve = [{"step": 50, "train_s": 5.0, "val_loss": 2.0}, {"step": 100, "train_s": 10.0, "val_loss": 1.5}]
    assert ttl.first_reach(curve, 1.7) == {"step": 100, "train_s": 10.0}
    assert ttl.first_reach(curve, 1.2) is None
