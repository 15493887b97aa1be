"""ServeEngine with the fast path: compile=True reaches the policy, warm-up compiles every batch size first."""

from __future__ import annotations

from xvla import XVLAPolicy
from xvla.serve.engine import ServeEngine

from .serve_support import serve_config


class RecordingRunner:
    """Stands in for xvla.model.compiled_runner.CompiledRunner: records the warm-up call instead of compiling
    (seconds, not minutes); the model runs eagerly."""

    def __init__(self):
        self.calls = []

    def active(self):
        return False

    def warmup(self, views, image_size):
        self.calls.append((views, tuple(image_size)))
        return 0.0


def test_warmup_compiles_the_configured_views_and_size(tokenizer):
    engine = ServeEngine(XVLAPolicy(serve_config(), tokenizer=tokenizer))
    fast = RecordingRunner()
    engine.model.runner = fast
    engine.warmup()
    assert fast.calls == [(engine.config.total_image_views, tuple(engine.image_size))]


def test_from_pretrained_passes_compile_to_the_policy(serve_checkpoint, monkeypatch):
    seen = {}

    def fake_enable(model, batch_sizes):
        seen["batch_sizes"] = tuple(batch_sizes)
        model.runner = RecordingRunner()

    monkeypatch.setattr("xvla.model.compiled_runner.compile_for_inference", fake_enable)
    engine = ServeEngine.from_pretrained(
        serve_checkpoint, device="cpu", compile=True, compile_batch_sizes=(1, 4)
    )
    assert seen["batch_sizes"] == (1, 4)
    engine.warmup()
    assert engine.model.runner.calls


def test_default_is_eager(serve_checkpoint):
    engine = ServeEngine.from_pretrained(serve_checkpoint, device="cpu")
    assert engine.model.runner is None


def test_serve_flag_quantize_reaches_the_policy(serve_checkpoint):
    from xvla.model.int8_linear import Int8Linear
    from xvla.serve.server import ServeConfig, build_engine

    engine = build_engine(ServeConfig(policy_path=str(serve_checkpoint), device="cpu", quantize="int8"))
    assert any(isinstance(m, Int8Linear) for m in engine.model.modules())
