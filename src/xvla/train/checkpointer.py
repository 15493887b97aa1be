"""Saving and resuming one training run: the output folder and the checkpoint it resumes from, what a
checkpoint holds (weights, optimizer, schedule, sampler position, RNG), a failed write that leaves the
previous checkpoints as they were, and the SIGTERM that asks for one last save.

The files and their layout are :mod:`xvla.train.state`'s; this module decides what goes into them.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..utils import UserFacingError, write_json
from . import distributed as dist_utils
from . import state as st
from .config import TrainConfig
from .lora import adapter_state_dict, merged_state_dict

if TYPE_CHECKING:
    from ..policy import XVLAPolicy
    from .trainer import RunParts

logger = logging.getLogger(__name__)


def _default_output_dir(recipe: str) -> Path:
    return Path("outputs/train") / f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}_{recipe}"


class Checkpointer:
    """Writes a run's checkpoints under ``out`` and reads back the one it resumes from (``resume_from``)."""

    def __init__(
        self,
        cfg: TrainConfig,
        env: dist_utils.DistEnv,
        out: Path,
        resume_from: Path | None,
        log: Callable[[str], None],
    ):
        self.cfg, self.env, self.out, self.resume_from, self.log = cfg, env, out, resume_from, log

    @classmethod
    def open(cls, cfg: TrainConfig, env: dist_utils.DistEnv, log: Callable[[str], None]) -> Checkpointer:
        """The output folder (named by the date when none is given) and, with ``--resume``, its newest checkpoint.
        A new run refuses a folder that holds checkpoints, so that it never mixes two runs' files."""
        out = Path(cfg.output_dir) if cfg.output_dir else None
        if out is None:
            out = dist_utils.broadcast_object(env, _default_output_dir(cfg.recipe))
            cfg.output_dir = str(out)
        resume_from = None
        if cfg.resume:
            resume_from = st.latest_checkpoint(out)
            if resume_from is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint under {out / st.CHECKPOINTS} to resume from; drop --resume to start "
                    "a new run"
                )
        elif st.list_checkpoints(out):
            raise FileExistsError(
                f"output_dir {out} already holds checkpoints: pass --resume to continue that run, or choose another "
                "--output_dir"
            )
        dist_utils.barrier(env)
        if env.is_main and not cfg.dry_run:
            out.mkdir(parents=True, exist_ok=True)
            st.clean_stale_tmp(out)
        dist_utils.barrier(env)
        return cls(cfg, env, out, resume_from, log)

    @property
    def resuming(self) -> bool:
        return self.resume_from is not None

    @property
    def _lora(self) -> bool:
        return self.cfg.lora.enable or self.cfg.trainable == "lora"

    @property
    def _fsdp(self) -> bool:
        return self.cfg.fsdp and self.env.distributed

    # -------------------------------------------------------------- resume
    def _training_state(self) -> Path:
        assert self.resume_from is not None
        return self.resume_from / st.TRAINING_STATE

    def start_step(self) -> int:
        if self.resume_from is None:
            return 0
        return int(st.read_json(self._training_state() / "trainer_state.json")["step"])

    def restore_lora(self, policy: XVLAPolicy) -> None:
        """A LoRA run resumes from its base model plus the trainable tensors it saved (the exported weights are
        merged, so they cannot be trained on)."""
        tensors = st.load_tensors(self._training_state() / "trainable.safetensors")
        named = dict(policy.model.named_parameters())
        missing = [n for n in tensors if n not in named]
        if missing:
            raise ValueError(
                f"the checkpoint's LoRA state does not match the model: unknown tensors {missing[:5]}"
            )
        with torch.no_grad():
            for n, t in tensors.items():
                named[n].copy_(t)

    def restore_optimizer(self, policy: XVLAPolicy, optimizer, scheduler) -> None:
        ts = self._training_state()
        tensors = st.load_tensors(ts / "optimizer.safetensors")
        state = st.unflatten_optimizer_state(tensors, st.read_json(ts / "optimizer.json"))
        if self._fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                policy.model, optimizer, state, options=StateDictOptions(full_state_dict=True)
            )
        else:
            saved = [len(g["params"]) for g in state["param_groups"]]
            have = [len(g["params"]) for g in optimizer.param_groups]
            if saved != have:
                raise ValueError(
                    f"the checkpoint's optimizer has parameter groups of sizes {saved} but this run has {have}: "
                    "resume with the same recipe and freeze switches as the interrupted run"
                )
            optimizer.load_state_dict(state)
        scheduler.load_state_dict(st.read_json(ts / "scheduler.json"))
        self.log(f"resumed from {self.resume_from} (step {scheduler.step_count})")

    def sampler_state(self) -> dict[str, Any]:
        return st.read_json(self._training_state() / "sampler.json")

    def restore_rng(self) -> None:
        ts, rank = self._training_state(), self.env.rank
        path = ts / f"rng_state_rank{rank}.safetensors"
        if not path.is_file():
            logger.warning(
                "no RNG state for rank %d in %s: the noise stream will differ from the interrupted run",
                rank,
                ts,
            )
            torch.manual_seed(self.cfg.seed + rank + 7919 * int(self.resume_from.name))
            return
        st.set_rng_state(st.load_tensors(path), st.read_json(ts / f"rng_state_rank{rank}.json"))

    # -------------------------------------------------------------- save
    def model_state(self, policy: XVLAPolicy) -> dict[str, torch.Tensor]:
        """The full weights (gathered onto rank 0 under FSDP: every rank must call it), LoRA merged in."""
        if self._fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(
                policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        if self._lora:
            return merged_state_dict(policy.model)
        return policy.model.state_dict()

    def _optimizer_state(self, policy: XVLAPolicy, optimizer) -> dict[str, Any]:
        if self._fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(
                policy.model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return optimizer.state_dict()

    def save(self, step: int, parts: RunParts, final: bool) -> Path:
        """Write and publish a checkpoint. A failed write (a full disk, a lost mount) removes the half-written
        folder, so the space it took is free again and the previous checkpoints stay as they are."""
        try:
            return self._write(step, parts, final)
        except OSError as exc:
            shutil.rmtree(st.tmp_dir(self.out, step), ignore_errors=True)
            raise UserFacingError(self._write_failed_message(step, exc)) from exc

    def _write_failed_message(self, step: int, exc: OSError) -> str:
        out = self.out
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "the disk is full" if full else "the file system refused a write"
        where = f" writing {exc.filename}" if exc.filename else ""
        last = st.latest_checkpoint(out)
        kept = f"the last complete checkpoint, {last}, is intact" if last else "no earlier checkpoint exists"
        fix = (
            "free some space (or lower --keep_last, or choose an --output_dir on a larger disk)"
            if full
            else "fix the file system"
        )
        resume = f"resume with: xvla train --output_dir={out} --resume" if last else "start the run again"
        return (
            f"could not write the checkpoint of step {step}: {what} ({exc.strerror or exc}{where}). The "
            f"half-written checkpoint was removed and {kept}; {fix}, then {resume}"
        )

    def _write(self, step: int, parts: RunParts, final: bool) -> Path:
        """Every rank gathers the state (collective under FSDP) and writes its RNG; rank 0 writes the rest."""
        env = self.env
        model_state = self.model_state(parts.policy)
        optim_state = self._optimizer_state(parts.policy, parts.optimizer)
        tmp = st.tmp_dir(self.out, step)
        if env.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            save_config = parts.policy.config.replace(dtype=parts.save_dtype, domains=parts.domains or None)
            st.export_pretrained(
                tmp / st.PRETRAINED, model_state, save_config, parts.policy.tokenizer, parts.source
            )
            self._write_training_state(tmp / st.TRAINING_STATE, step, parts, optim_state)
        dist_utils.barrier(env)
        tensors, meta = st.rng_state()
        ts = tmp / st.TRAINING_STATE
        ts.mkdir(parents=True, exist_ok=True)
        st.save_tensors(ts / f"rng_state_rank{env.rank}.safetensors", tensors)
        write_json(ts / f"rng_state_rank{env.rank}.json", meta)
        dist_utils.barrier(env)
        dest = st.step_dir(self.out, step)
        if env.is_main:
            dest = st.publish(self.out, step, self.cfg.keep_last, final=final)
            self.log(f"step {step}: checkpoint {dest}")
        dist_utils.barrier(env)
        return dest / st.PRETRAINED

    def _write_training_state(
        self, ts: Path, step: int, parts: RunParts, optim_state: dict[str, Any]
    ) -> None:
        cfg = self.cfg
        ts.mkdir(parents=True, exist_ok=True)
        tensors, meta = st.flatten_optimizer_state(optim_state)
        st.save_tensors(ts / "optimizer.safetensors", tensors)
        write_json(ts / "optimizer.json", meta)
        write_json(ts / "scheduler.json", parts.scheduler.state_dict())
        write_json(ts / "sampler.json", parts.sampler.state_dict(step * cfg.grad_accum_steps))
        if self._lora:
            model = parts.policy.model
            trainable = {n: p for n, p in model.named_parameters() if parts.trainable.get(n, False)}
            trainable.update(adapter_state_dict(model))
            st.save_tensors(ts / "trainable.safetensors", trainable)
        write_json(
            ts / "trainer_state.json",
            {
                "step": step,
                "consumed_batches": step * cfg.grad_accum_steps,
                "world_size": self.env.world_size,
                "recipe": cfg.recipe,
                "save_dtype": parts.save_dtype,
                "time": datetime.datetime.now().isoformat(),
            },
        )


# ---------------------------------------------------------------------------------------------- interruptions
class SigtermSave:
    """SIGTERM (a scheduler's notice before preemption): a single-process run finishes its step, saves and stops;
    before the loop (``armed`` False), under DDP/FSDP (ranks would save at different steps) or at a second
    SIGTERM it stops at once, as Ctrl-C does. Either way :func:`interrupted_message` names the checkpoint."""

    def __init__(self, distributed: bool):
        self.distributed = distributed
        self.armed = False  # the training loop sets it: a SIGTERM now saves at the end of the step
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        chld: list = []

        def on_sigterm(signum, frame):
            if self.requested or not self.armed or self.distributed:
                raise KeyboardInterrupt
            self.requested = True
            # A scheduler signals the loader workers too: their death must not raise in the middle of the save
            # (torch's SIGCHLD handler would); a batch they no longer deliver ends the run at the next batch.
            chld.append(signal.signal(signal.SIGCHLD, signal.SIG_DFL))

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            if chld:
                signal.signal(signal.SIGCHLD, chld[0])


def interrupted_message(output_dir: str | None, sigterm: bool) -> str:
    """Checkpoints are assembled aside and renamed into place, so an interrupt leaves only complete ones."""
    out = Path(output_dir or ".")
    last = st.latest_checkpoint(out) if out.is_dir() else None
    what = "stopped by SIGTERM" if sigterm else "interrupted"
    if last is None:
        return f"{what} before the first checkpoint: nothing was saved in {out}; start the run again"
    return (
        f"{what}; the last complete checkpoint is {last} (nothing half-written was kept). Resume with: "
        f"xvla train --output_dir={out} --resume"
    )
