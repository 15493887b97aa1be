"""Metrics: a CSV file, TensorBoard scalars and a loss-curve plot (written by rank 0 only)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
PLOT_NAME = "loss_curve.png"


class MetricsLogger:
    def __init__(
        self, output_dir: Path, enabled: bool, tensorboard: bool = True, resume_step: int | None = None
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_CSV
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            # Rows logged after the checkpoint belong to the interrupted run: drop them.
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [r for r in reader if r.get("step") and int(float(r["step"])) <= resume_step]
            self._rewrite()
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                kwargs = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self.writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), **kwargs)
            except ImportError:
                logger.warning(
                    "tensorboard is not installed: metrics go to %s only (pip install tensorboard)", self.path
                )

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _fmt(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new or not self.path.exists():
            self.columns += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _fmt(value: Any) -> Any:
    return repr(float(value)) if isinstance(value, float) else value


def read_metrics(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_metrics(csv_path: Path, out_path: Path) -> Path | None:
    """Loss terms (log scale) and per-group learning rates over steps."""
    rows = read_metrics(csv_path) if Path(csv_path).is_file() else []
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no loss-curve plot (pip install matplotlib)")
        return None
    steps = [r["step"] for r in rows]
    loss_keys = ["loss"] + sorted(k for k in rows[0] if k.startswith("loss/"))
    lr_keys = sorted({k for r in rows for k in r if k.startswith("lr/")})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for key in loss_keys:
        ys = [r.get(key, float("nan")) for r in rows]
        axes[0].plot(steps, ys, label=key, linewidth=1.6 if key == "loss" else 1.0)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    if all(r.get("loss", 0) > 0 for r in rows):
        axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title("training loss")
    for key in lr_keys:
        axes[1].plot(steps, [r.get(key, float("nan")) for r in rows], label=key.split("/", 1)[1])
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("learning rate")
    axes[1].legend(fontsize=8)
    axes[1].set_title("learning rate per group")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)
