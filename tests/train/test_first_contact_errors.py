"""The first-contact mistakes get one line that names the flag to fix, and training keeps only complete files."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from xvla import XVLAPolicy
from xvla.cli import main
from xvla.train import build_train_config
from xvla.train.config import deep_merge
from xvla.train.trainer import Trainer
from xvla.utils import UserFacingError

from .support import tiny_policy_fields


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_cli_names_the_flag_for_each_first_contact_mistake(
    tmp_path, dataset_a, tokenizer_dir, tiny_checkpoint, capsys
):
    err = one_line_error(
        capsys, ["train", f"--dataset.root={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'o'}"]
    )
    assert "--dataset.root" in err and "does not exist" in err
    err = one_line_error(capsys, ["train", f"--output_dir={tmp_path / 'empty'}", "--resume"])
    assert "--resume" in err and "no training run" in err
    err = one_line_error(
        capsys,
        [
            "train",
            f"--dataset.root={dataset_a}",
            f"--output_dir={tmp_path / 'w'}",
            f"--tokenizer={tokenizer_dir}",
            "--policy.action_mode=ee6d",
        ],
    )
    assert "7-dim actions" in err and "--policy.action_mode=auto" in err
    err = one_line_error(
        capsys,
        [
            "train",
            f"--dataset.root={dataset_a}",
            f"--output_dir={tmp_path / 'k'}",
            f"--policy.path={tiny_checkpoint}",
            '--dataset.keys={"observation.images.nope": "observation.images.front"}',
        ],
    )
    assert "observation.images.nope" in err and "model key" in err
    err = one_line_error(capsys, ["convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert "does not exist" in err


def test_a_corrupt_weights_file_is_one_line(tmp_path, tiny_checkpoint, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    err = one_line_error(capsys, ["convert", str(broken), str(tmp_path / "out")])
    assert "model.safetensors" in err and "truncated or corrupt" in err


def test_interrupted_training_says_how_to_resume_and_final_copies(
    tmp_path, dataset_a, tokenizer, monkeypatch
):
    cfg = {
        "dataset": {"root": str(dataset_a)},
        "policy": tiny_policy_fields(),
        "steps": 3,
        "batch_size": 2,
        "num_workers": 0,
        "save_freq": 3,
        "tensorboard": False,
        "plot": False,
        "output_dir": str(tmp_path / "r"),
    }
    Trainer(build_train_config(cfg), tokenizer=tokenizer).train()
    # `final` is a real folder: `cp -r` gives a loadable copy, not a dangling relative link
    subprocess.run(["cp", "-r", str(tmp_path / "r" / "final"), str(tmp_path / "copy")], check=True)
    assert XVLAPolicy.from_pretrained(tmp_path / "copy").config.domains
    trainer = Trainer(build_train_config(deep_merge(cfg, {"steps": 6, "resume": True})), tokenizer=tokenizer)

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_loop", interrupt)
    with pytest.raises(UserFacingError, match=r"000003.*--resume"):
        trainer.train()


def test_a_nan_loss_stops_training_before_anything_is_saved(
    tmp_path, dataset_a, tokenizer_dir, monkeypatch, capsys
):
    from xvla.model.xvla import XVLAModel

    real_forward = XVLAModel.forward

    def nan_loss(self, *args, **kwargs):
        losses = real_forward(self, *args, **kwargs)
        return {k: v * float("nan") for k, v in losses.items()}

    monkeypatch.setattr(XVLAModel, "forward", nan_loss)
    out = tmp_path / "nan"
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"policy": tiny_policy_fields(), "dataset": {"root": str(dataset_a)}}))
    err = one_line_error(
        capsys,
        [
            "train",
            f"--config={config}",
            f"--output_dir={out}",
            "--steps=3",
            "--save_freq=1",
            "--num_workers=0",
            "--batch_size=2",
            f"--tokenizer={tokenizer_dir}",
        ],
    )
    assert "the loss is nan at step 1" in err and "--optimizer.lr" in err
    assert not list(out.glob("checkpoints/0*"))  # stopped before the first checkpoint


def _train_argv(tmp_path, dataset_a, tokenizer_dir, out, steps=6):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"policy": tiny_policy_fields(), "dataset": {"root": str(dataset_a)}}))
    return [
        "train",
        f"--config={config}",
        f"--output_dir={out}",
        f"--steps={steps}",
        "--save_freq=100",
        "--num_workers=0",
        "--batch_size=2",
        f"--tokenizer={tokenizer_dir}",
    ]


def test_sigterm_saves_the_step_and_exits_as_ctrl_c(tmp_path, dataset_a, tokenizer_dir, monkeypatch, capsys):
    """A scheduler's SIGTERM once ended training without a word: now the step in progress is saved."""
    import os
    import signal

    real_step = Trainer._optimizer_step
    steps = []

    def step_then_sigterm(self, parts, params):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, parts, params)

    monkeypatch.setattr(Trainer, "_optimizer_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "term"
    assert main(_train_argv(tmp_path, dataset_a, tokenizer_dir, out)) == 130
    err = capsys.readouterr().err
    assert "stopped by SIGTERM; the last complete checkpoint is" in err and "000002" in err
    assert f"xvla train --output_dir={out} --resume" in err
    assert sorted(p.name for p in (out / "checkpoints").glob("0*")) == ["000002"] and len(steps) == 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back after the run


def test_ctrl_c_exits_130_and_names_the_last_checkpoint(
    tmp_path, dataset_a, tokenizer_dir, monkeypatch, capsys
):
    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_loop", interrupt)
    assert main(_train_argv(tmp_path, dataset_a, tokenizer_dir, tmp_path / "int")) == 130
    assert "interrupted before the first checkpoint" in capsys.readouterr().err


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tmp_path, dataset_a, tokenizer_dir, monkeypatch, capsys
):
    import errno

    from xvla.train import state

    real_save = state.save_tensors

    def disk_full_at_step_4(path, tensors):
        if "000004" in str(path):
            real_save(path, tensors)  # part of the checkpoint is on disk when the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, tensors)

    monkeypatch.setattr(state, "save_tensors", disk_full_at_step_4)
    out = tmp_path / "full"
    argv = _train_argv(tmp_path, dataset_a, tokenizer_dir, out)
    argv[argv.index("--save_freq=100")] = "--save_freq=2"
    err = one_line_error(capsys, argv)
    assert "could not write the checkpoint of step 4: the disk is full (No space left on device" in err
    assert "000002" in err and "is intact" in err and f"xvla train --output_dir={out} --resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "000002",
        "last",
    ]  # no half-written folder
    assert XVLAPolicy.from_pretrained(out / "checkpoints" / "last" / "pretrained_model").config.domains


def test_a_corrupt_video_names_episode_frame_and_file_or_is_skipped(
    tmp_path, dataset_a, tokenizer_dir, capsys
):
    data = tmp_path / "data"
    shutil.copytree(dataset_a, data)
    video = data / "videos" / "observation.images.front" / "chunk-000" / "file-001.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    argv = _train_argv(tmp_path, data, tokenizer_dir, tmp_path / "bad", steps=8)
    argv[argv.index("--num_workers=0")] = "--num_workers=1"  # the error crosses a loader process as one line
    argv[argv.index("--batch_size=2")] = "--batch_size=8"  # 8 steps of 8 samples cover every frame
    err = one_line_error(capsys, argv)
    assert "episode 1, frame " in err and str(video) in err and "--mixture.skip_bad_episodes" in err
    argv[argv.index(f"--output_dir={tmp_path / 'bad'}")] = f"--output_dir={tmp_path / 'skip'}"
    assert main([*argv, "--mixture.skip_bad_episodes"]) == 0
    assert "skipped 1 of 3 episodes whose video does not decode ([1];" in capsys.readouterr().out


def test_sigterm_to_the_process_group_with_loader_workers(tmp_path, dataset_a, tokenizer_dir):
    """What a scheduler does: SIGTERM to the run and its loader workers at once. The run ends with the resume
    line and exit status 130, no traceback, and no worker left behind to hang the exit."""
    import os
    import signal
    import sys
    import time

    out = tmp_path / "group"
    argv = _train_argv(tmp_path, dataset_a, tokenizer_dir, out, steps=100000)
    argv[argv.index("--num_workers=0")] = "--num_workers=1"
    argv[argv.index("--save_freq=100")] = "--save_freq=3"
    log = tmp_path / "train.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xvla.cli", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        try:
            deadline = time.monotonic() + 300
            # A few steps in, with the workers running. Wait for any step's checkpoint: older ones are pruned as
            # new ones land (keep_last), so one named step may come and go between two looks.
            while not any(p.name.isdigit() for p in (out / "checkpoints").glob("*")):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 130, text[-2000:]
    assert "stopped by SIGTERM; the last complete checkpoint is" in text and "--resume" in text
    assert "Traceback" not in text
