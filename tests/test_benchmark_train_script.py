"""benchmarks/train.py runs end to end on a tiny case: the training-step and data-loading paths it times
are the trainer's own (TrainingModule on the processor's model inputs, MixtureDataset + Collator)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train.py"


def test_train_benchmark_times_a_model_step_and_the_loader(tmp_path):
    out = tmp_path / "rows.json"
    args = ["--configs", "tiny", "--batches", "2", "--precisions", "fp32", "--repeats", "1", "--warmup", "0",
            "--workers", "0", "--data-batches", "1", "--threads", "1", "--json", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    rows = json.loads(out.read_text())
    model = [r for r in rows if r["kind"] == "model"]
    data = [r for r in rows if r["kind"] == "data"]
    assert len(model) == 1 and model[0]["samples_s"] > 0 and model[0]["config"] == "tiny"
    assert sorted(r["jitter"] for r in data) == [False, True] and all(r["samples_s"] > 0 for r in data)
