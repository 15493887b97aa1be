#!/usr/bin/env python
"""Write the reference-parity fixtures under tests/fixtures/parity/.

This script runs in a SEPARATE reference environment (LeRobot 0.4.4 installed with --no-deps,
transformers<5, torch CPU); nothing in the package or the tests imports it. It builds tiny random
LeRobot ``XVLAPolicy`` models, writes their checkpoints in the three layouts we must load (LeRobot
with remote-code Florence keys, LeRobot with native ``transformers`` Florence keys, the official
Hugging Face release) and records inputs, injected noise and the reference outputs, so that the
tests can check parity without LeRobot.

    /work/refenv/bin/python scripts/make_parity_fixtures.py [--out tests/fixtures/parity]

LeRobot imports ``torchvision`` at module level in code that X-VLA never calls; when it is not
installed, an import-only stand-in is written to a temporary directory and put on ``sys.path``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "parity"

# --------------------------------------------------------------------------------------------
# torchvision stand-in (import-only)
# --------------------------------------------------------------------------------------------
_STUB_MODULES = (
    "torchvision",
    "torchvision.io",
    "torchvision.models",
    "torchvision.models._utils",
    "torchvision.ops",
    "torchvision.ops.misc",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.transforms.v2",
    "torchvision.transforms.v2.functional",
)
_STUB_SOURCE = '''"""Import-only stand-in created by make_parity_fixtures.py. Nothing in it works."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed (import-only stand-in)")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    value = type(name, (_Unavailable,), {})
    globals()[name] = value
    return value
'''


def install_torchvision_stub() -> Path | None:
    try:
        import torchvision  # noqa: F401

        return None
    except ImportError:
        pass
    root = Path(tempfile.mkdtemp(prefix="xvla_tv_stub_"))
    for mod in _STUB_MODULES:
        pkg = root.joinpath(*mod.split("."))
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(_STUB_SOURCE)
    sys.path.insert(0, str(root))
    return root


# --------------------------------------------------------------------------------------------
# Tiny model configuration
# --------------------------------------------------------------------------------------------
IMAGE_SIZE = 16
NUM_TOKENS = 8  # L
CHUNK = 4
VOCAB = 64

FLORENCE_CONFIG = {
    "model_type": "florence2",
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "ignore_index": -100,
    "vocab_size": VOCAB,
    "projection_dim": 24,
    "vision_config": {
        "model_type": "davit",
        "drop_path_rate": 0.1,
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "enable_checkpoint": False,
        "dim_embed": [8, 16],
        "num_heads": [2, 4],
        "num_groups": [2, 4],
        "depths": [1, 1],
        "window_size": 3,
        "projection_dim": 24,
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 10},
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 8},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    },
    "text_config": {
        "model_type": "florence2_language",
        "vocab_size": VOCAB,
        "d_model": 24,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48,
        "max_position_embeddings": 32,
        "activation_function": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "scale_embedding": False,
        "is_encoder_decoder": True,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    },
}

HEAD = {
    "hidden_size": 32,
    "depth": 2,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "num_domains": 6,
    "len_soft_prompts": 4,
    "dim_time": 8,
    "max_len_seq": 32,
}


@dataclass
class Case:
    name: str
    layout: str  # "lerobot" | "lerobot_native" | "official"
    seed: int
    description: str
    batch: int = 2
    views: int = 2  # real cameras
    empty_cameras: int = 0
    domain_ids: list[int] = field(default_factory=lambda: [3, 3])
    action_mode: str = "ee6d"
    action_feature_dim: int = 20  # dataset action feature (real dim)
    max_state_dim: int = 32
    max_action_dim: int = 20
    use_hetero_proj: bool = False
    steps: int = 3


CASES = [
    Case(
        "lerobot_ee6d",
        "lerobot",
        seed=1101,
        description="LeRobot save_pretrained checkpoint (remote-code Florence keys), ee6d, 2 views, "
        "one domain id, proprio = max_state_dim 32",
    ),
    Case(
        "lerobot_mixed_domains",
        "lerobot",
        seed=1202,
        batch=3,
        views=2,
        empty_cameras=1,
        domain_ids=[0, 2, 5],
        steps=4,
        description="LeRobot checkpoint, ee6d, B=3 with three domain ids, 3 view slots where the last "
        "is an empty camera (mask False, zero image)",
    ),
    Case(
        "lerobot_auto7",
        "lerobot",
        seed=1303,
        action_mode="auto",
        action_feature_dim=7,
        max_action_dim=20,
        domain_ids=[1, 4],
        description="LeRobot checkpoint, action_mode auto with a 7-D action feature and max_action_dim "
        "20; model noise is 20-D, actions and the training target are 7-D",
    ),
    Case(
        "lerobot_hetero_joint",
        "lerobot",
        seed=1404,
        action_mode="joint",
        action_feature_dim=14,
        use_hetero_proj=True,
        domain_ids=[2, 5],
        steps=4,
        description="LeRobot checkpoint, use_hetero_proj=True (domain-aware vlm/aux projections), "
        "action_mode joint (14-D)",
    ),
    Case(
        "official_ee6d",
        "official",
        seed=1505,
        max_state_dim=20,
        domain_ids=[3, 1],
        description="Official HF release layout (2toINF/X-VLA-*): keys vlm.*/transformer.* without "
        "the model. prefix, remote-code Florence names, tied alias "
        "vlm.language_model.model.shared.weight dropped; official config.json schema; ee6d, "
        "proprio dim 20",
    ),
    Case(
        "lerobot_native_ee6d",
        "lerobot_native",
        seed=1606,
        domain_ids=[4, 0],
        description="LeRobot config.json (florence_config still in remote-code form: the loader must "
        "accept it) with weights in the NATIVE transformers Florence2 layout "
        "(model.vlm.multi_modal_projector.*, language_model.* without .model, image_projection "
        "transposed, no final_logits_bias); ee6d, 2 views",
    ),
]


# --------------------------------------------------------------------------------------------
# Key remapping
# --------------------------------------------------------------------------------------------
_NATIVE_BLOCK_RULES = [
    (r"conv1\.fn\.dw\.", "conv1."),
    (r"conv2\.fn\.dw\.", "conv2."),
    (r"(window|channel)_attn\.norm\.", "norm1."),
    (r"(window|channel)_attn\.fn\.", r"\1_attn."),
    (r"ffn\.norm\.", "norm2."),
    (r"ffn\.fn\.net\.", "ffn."),
]


def remote_to_native_vlm_key(key: str) -> str | None:
    """Map one remote-code Florence-2 key (relative to the vlm) to the native transformers name."""
    if key == "language_model.final_logits_bias":
        return None
    m = re.match(r"vision_tower\.convs\.(\d+)\.proj\.(.*)$", key)
    if m:
        return f"vision_tower.convs.{m.group(1)}.conv.{m.group(2)}"
    m = re.match(r"(vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(.*)$", key)
    if m:
        rest = m.group(2)
        for pat, rep in _NATIVE_BLOCK_RULES:
            new, n = re.subn("^" + pat, rep, rest)
            if n:
                rest = new
                break
        return m.group(1) + rest
    if key == "image_projection":
        return "multi_modal_projector.image_projection.weight"
    for old, new in (
        ("image_proj_norm.", "multi_modal_projector.image_proj_norm."),
        ("image_pos_embed.", "multi_modal_projector.image_position_embed."),
        ("visual_temporal_embed.", "multi_modal_projector.visual_temporal_embed."),
        ("language_model.model.", "language_model."),
    ):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def to_native_layout(sd: dict) -> dict:
    out = {}
    prefix = "model.vlm."
    for k, v in sd.items():
        if not k.startswith(prefix):
            out[k] = v
            continue
        nk = remote_to_native_vlm_key(k[len(prefix) :])
        if nk is None:
            continue
        if nk == "multi_modal_projector.image_projection.weight":
            v = v.t()
        out[prefix + nk] = v.contiguous()
    return out


def to_official_layout(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        assert k.startswith("model."), k
        nk = k[len("model.") :]
        if nk == "vlm.language_model.model.shared.weight":
            continue
        out[nk] = v
    # the official release keeps the encoder alias of the tied token embedding
    assert "vlm.language_model.model.encoder.embed_tokens.weight" in out
    return out


def back_to_lerobot(sd: dict, layout: str, lerobot_sd: dict) -> dict:
    """Invert the layout conversion (used only to check that the written checkpoint is complete)."""
    enc = "model.vlm.language_model.model.encoder.embed_tokens.weight"
    shared = "model.vlm.language_model.model.shared.weight"
    if layout == "official":
        out = {"model." + k: v for k, v in sd.items()}
    elif layout == "lerobot_native":
        inverse = {}
        for k in lerobot_sd:
            if k.startswith("model.vlm."):
                nk = remote_to_native_vlm_key(k[len("model.vlm.") :])
                if nk is not None:
                    inverse["model.vlm." + nk] = k
        out = {}
        for k, v in sd.items():
            rk = inverse.get(k, k)
            out[rk] = v.t() if rk == "model.vlm.image_projection" else v
        fb = "model.vlm.language_model.final_logits_bias"
        out[fb] = lerobot_sd[fb].new_zeros(lerobot_sd[fb].shape)  # an unused zero buffer
    else:
        out = dict(sd)
    out[shared] = out[enc]
    return out


def official_config(case: Case) -> dict:
    return {
        "model_type": "xvla",
        "architectures": ["XVLA"],
        "torch_dtype": "float32",
        "action_mode": case.action_mode,
        "use_proprio": True,
        "num_actions": CHUNK,
        **HEAD,
        "use_hetero_proj": case.use_hetero_proj,
        "soft_prompt_length": HEAD["len_soft_prompts"],
        "max_action_dim": case.max_action_dim,
        "real_action_dim": case.action_feature_dim,
        "florence_config": copy.deepcopy(FLORENCE_CONFIG),
    }


# --------------------------------------------------------------------------------------------
# Reference model construction and noise injection
# --------------------------------------------------------------------------------------------
def build_policy(case: Case):
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.xvla.configuration_xvla import XVLAConfig
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

    inputs = {
        f"observation.images.cam{i}": PolicyFeature(
            type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)
        )
        for i in range(case.views)
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(case.max_state_dim,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(case.action_feature_dim,))}
    cfg = XVLAConfig(
        device="cpu",
        input_features=inputs,
        output_features=outputs,
        chunk_size=CHUNK,
        n_action_steps=CHUNK,
        florence_config=copy.deepcopy(FLORENCE_CONFIG),
        tokenizer_max_length=NUM_TOKENS,
        action_mode=case.action_mode,
        num_denoising_steps=case.steps,
        max_state_dim=case.max_state_dim,
        max_action_dim=case.max_action_dim,
        use_hetero_proj=case.use_hetero_proj,
        empty_cameras=case.empty_cameras,
        resize_imgs_with_padding=(IMAGE_SIZE, IMAGE_SIZE),
        **HEAD,
    )
    torch.manual_seed(case.seed)
    policy = XVLAPolicy(cfg)
    policy.eval()

    # `image_projection` is created with torch.empty and never initialised by the reference:
    # give it defined values before perturbing.
    g = torch.Generator().manual_seed(case.seed + 1)
    with torch.no_grad():
        vlm = policy.model.vlm
        vlm.image_projection.copy_(torch.randn(vlm.image_projection.shape, generator=g) * 0.2)
        # perturb every parameter (tied embeddings are one Parameter and are perturbed once);
        # buffers (final_logits_bias, the cosine temporal table) are left as the reference made them
        for _, p in policy.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, p in policy.named_parameters():
            if not torch.isfinite(p).all():
                raise RuntimeError(f"non-finite parameter {name}")
    return policy


class NoiseInjector:
    """Replace torch.randn / torch.rand / torch.randn_like for the duration of a reference call."""

    def __init__(self, randn=None, rand=None, randn_like=None):
        self.queue = {"randn": randn, "rand": rand, "randn_like": randn_like}
        self.calls: list[tuple[str, tuple]] = []

    def _make(self, kind):
        def fn(*args, **kwargs):
            value = self.queue[kind]
            if value is None:
                raise RuntimeError(f"unexpected torch.{kind} call {args} {kwargs}")
            if kind == "randn_like":
                shape = tuple(args[0].shape)
            else:
                shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
                shape = tuple(int(s) for s in shape)
            if tuple(value.shape) != shape:
                raise RuntimeError(f"torch.{kind}{shape}: prepared noise has shape {tuple(value.shape)}")
            self.calls.append((kind, shape))
            self.queue[kind] = None  # each is drawn exactly once
            dtype = kwargs.get("dtype") or (args[0].dtype if kind == "randn_like" else value.dtype)
            return value.clone().to(dtype=dtype)

        return fn

    @contextlib.contextmanager
    def active(self):
        import torch

        saved = {k: getattr(torch, k) for k in self.queue}
        try:
            for k in self.queue:
                setattr(torch, k, self._make(k))
            yield self
        finally:
            for k, v in saved.items():
                setattr(torch, k, v)


def make_inputs(case: Case, dim_action: int):
    import torch

    g = torch.Generator().manual_seed(case.seed + 2)
    b = case.batch
    n_views = case.views + case.empty_cameras
    input_ids = torch.randint(3, VOCAB, (b, NUM_TOKENS), generator=g)
    input_ids[:, 0] = 0  # bos
    input_ids[0, -2:] = 1  # some padding, attended as in the checkpoints
    input_ids[0, -3] = 2
    image_input = torch.randn(b, n_views, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    image_mask = torch.ones(b, n_views, dtype=torch.bool)
    if case.empty_cameras:
        image_mask[:, case.views :] = False
        image_input[:, case.views :] = 0.0
    domain_id = torch.tensor(case.domain_ids, dtype=torch.long)
    assert domain_id.shape == (b,)
    proprio = torch.randn(b, case.max_state_dim, generator=g)
    noise = torch.randn(b, CHUNK, dim_action, generator=g)
    # training target at the dataset's action dim; gripper channels of ee6d/joint are {0,1}
    action = torch.randn(b, CHUNK, case.action_feature_dim, generator=g) * 0.5
    grippers = {"ee6d": (9, 19), "joint": (6, 13)}.get(case.action_mode, ())
    for gi in grippers:
        action[..., gi] = (torch.rand(b, CHUNK, generator=g) > 0.5).float()
    u = torch.rand(1, generator=g)
    loss_noise = torch.randn(b, CHUNK, case.action_feature_dim, generator=g)
    return {
        "input_ids": input_ids,
        "image_input": image_input,
        "image_mask": image_mask,
        "domain_id": domain_id,
        "proprio": proprio,
        "noise": noise,
        "action": action,
        "u": u,
        "loss_noise": loss_noise,
    }


def run_reference(policy, case: Case, data: dict) -> dict:
    import torch

    model = policy.model
    model.eval()
    common = {k: data[k] for k in ("input_ids", "image_input", "image_mask", "domain_id", "proprio")}

    inj = NoiseInjector(randn=data["noise"])
    with torch.no_grad(), inj.active():
        actions = model.generate_actions(**{k: v.clone() for k, v in common.items()}, steps=case.steps)
    assert inj.calls == [("randn", tuple(data["noise"].shape))], inj.calls

    seen_t = []

    def grab_t(_mod, _args, kwargs):
        seen_t.append(kwargs["t"].detach().clone())

    handle = model.transformer.register_forward_pre_hook(grab_t, with_kwargs=True)
    inj = NoiseInjector(rand=data["u"], randn_like=data["loss_noise"])
    try:
        with torch.no_grad(), inj.active():
            losses = model(**{k: v.clone() for k, v in common.items()}, action=data["action"].clone())
    finally:
        handle.remove()
    assert [c[0] for c in inj.calls] == ["rand", "randn_like"], inj.calls
    assert len(seen_t) == 1
    out = {"actions": actions.detach().float().contiguous(), "t": seen_t[0].float()}
    for k, v in losses.items():
        out[f"loss.{k}"] = v.detach().float().reshape(())
    return out


# --------------------------------------------------------------------------------------------
# Native-layout check against transformers' own Florence2 model
# --------------------------------------------------------------------------------------------
def native_florence_config():
    fc = FLORENCE_CONFIG
    vc = fc["vision_config"]
    tc = {k: v for k, v in fc["text_config"].items() if k != "model_type"}
    return {
        "vision_config": {
            "embed_dim": vc["dim_embed"],
            "depths": vc["depths"],
            "num_heads": vc["num_heads"],
            "num_groups": vc["num_groups"],
            "patch_size": vc["patch_size"],
            "patch_stride": vc["patch_stride"],
            "patch_padding": vc["patch_padding"],
            "patch_prenorm": vc["patch_prenorm"],
            "window_size": vc["window_size"],
            "projection_dim": vc["projection_dim"],
            "max_position_embeddings": vc["image_pos_embed"]["max_pos_embeddings"],
            "max_temporal_embeddings": vc["visual_temporal_embedding"]["max_temporal_embeddings"],
        },
        "text_config": {"model_type": "bart", **tc},
    }


def check_native(policy, native_sd: dict, data: dict) -> str:
    """Load the mapped weights into transformers' native Florence2Model and compare image features."""
    import torch

    try:
        from transformers import Florence2Config
        from transformers.models.florence2.modeling_florence2 import Florence2Model
    except ImportError:
        return "skipped (this transformers has no native Florence2)"
    native = Florence2Model(Florence2Config(**native_florence_config())).eval()
    ref_keys = {k: v.shape for k, v in native.state_dict().items()}
    ours = {k[len("model.vlm.") :]: v for k, v in native_sd.items() if k.startswith("model.vlm.")}
    unknown = sorted(set(ours) - set(ref_keys))
    missing = sorted(set(ref_keys) - set(ours))
    allowed_missing = {"language_model.shared.weight"}
    bad_missing = [
        k for k in missing if not k.startswith("language_model.decoder.") and k not in allowed_missing
    ]
    if unknown or bad_missing:
        raise RuntimeError(f"native mapping mismatch: unknown={unknown} missing={bad_missing}")
    for k, v in ours.items():
        if tuple(v.shape) != tuple(ref_keys[k]):
            raise RuntimeError(f"native shape mismatch {k}: {tuple(v.shape)} vs {tuple(ref_keys[k])}")
    load = dict(ours)
    load["language_model.shared.weight"] = ours["language_model.encoder.embed_tokens.weight"]
    native.load_state_dict(load, strict=False)
    imgs = data["image_input"][:, 0]
    with torch.no_grad():
        ref = policy.model.vlm._encode_image(imgs)
        nat = native.get_image_features(imgs)
        if not torch.is_tensor(nat):
            nat = nat.pooler_output if getattr(nat, "pooler_output", None) is not None else nat[0]
    err = (ref - nat).abs().max().item()
    if err > 1e-4:
        raise RuntimeError(f"native image features differ from the reference by {err}")
    return f"ok: keys/shapes match transformers Florence2Model, image features max |diff| {err:.2e}"


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def save_sorted(tensors: dict, path: Path, metadata: dict) -> None:
    """safetensors file whose header is written in a fixed order, so reruns are byte-identical."""
    from safetensors.torch import load_file, save

    raw = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(metadata.items()))}
    ordered.update({k: header[k] for k in sorted(header)})
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(back[k].equal(tensors[k]) for k in tensors)


def write_case(case: Case, out_root: Path, tmp: Path) -> dict:
    import lerobot
    import torch
    from safetensors.torch import load_file, save_file

    policy = build_policy(case)
    dim_action = policy.model.dim_action
    data = make_inputs(case, dim_action)
    ref = run_reference(policy, case, data)

    saved = tmp / case.name
    policy.save_pretrained(saved)
    lerobot_sd = load_file(str(saved / "model.safetensors"))

    case_dir = out_root / case.name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    ckpt = case_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    notes = {}
    if case.layout == "lerobot":
        shutil.copy(saved / "config.json", ckpt / "config.json")
        shutil.copy(saved / "model.safetensors", ckpt / "model.safetensors")
    elif case.layout == "lerobot_native":
        shutil.copy(saved / "config.json", ckpt / "config.json")
        native_sd = to_native_layout(lerobot_sd)
        save_file(native_sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
        notes["native_check"] = check_native(policy, native_sd, data)
    elif case.layout == "official":
        (ckpt / "config.json").write_text(json.dumps(official_config(case), indent=2) + "\n")
        save_file(to_official_layout(lerobot_sd), str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    else:
        raise ValueError(case.layout)

    # the written checkpoint must reproduce the reference outputs exactly
    written = load_file(str(ckpt / "model.safetensors"))
    if case.layout == "lerobot":
        from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

        reloaded = XVLAPolicy.from_pretrained(str(ckpt))  # LeRobot's own loader (strict)
    else:
        reloaded = copy.deepcopy(policy)
        with torch.no_grad():
            for t in list(reloaded.parameters()) + list(reloaded.buffers()):
                t.zero_()
        reloaded.load_state_dict(back_to_lerobot(written, case.layout, lerobot_sd), strict=True)
    again = run_reference(reloaded, case, data)
    for k, v in ref.items():
        if not torch.equal(v, again[k]):
            raise RuntimeError(f"{case.name}: the written checkpoint changes {k}")

    tensors = {
        "input_ids": data["input_ids"].to(torch.int64),
        "image_input": data["image_input"].float(),
        "image_mask": data["image_mask"].to(torch.bool),
        "domain_id": data["domain_id"].to(torch.int64),
        "proprio": data["proprio"].float(),
        "noise": data["noise"].float(),
        "action": data["action"].float(),
        "loss_noise": data["loss_noise"].float(),
        **ref,
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {
        "steps": str(case.steps),
        "layout": case.layout,
        "case": case.name,
        "description": case.description,
        "reference": f"lerobot=={lerobot.__version__}",
    }
    save_sorted(tensors, case_dir / "io.safetensors", meta)

    cfg_json = json.loads((saved / "config.json").read_text())
    return {
        "case": case.name,
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "losses": {k: float(v) for k, v in ref.items() if k.startswith("loss.")},
        "lerobot_config_keys": sorted(cfg_json),
        "lerobot_has": {
            k: any(key.endswith(k) for key in lerobot_sd)
            for k in (
                "language_model.model.shared.weight",
                "language_model.model.encoder.embed_tokens.weight",
                "language_model.final_logits_bias",
                "visual_temporal_embed.pos_idx_to_embed",
            )
        },
        **notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", help="case names to (re)write; default all")
    ap.add_argument("--summary", type=Path, help="also write a JSON summary here")
    args = ap.parse_args()

    stub = install_torchvision_stub()
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    with tempfile.TemporaryDirectory(prefix="xvla_parity_") as tmp:
        for case in CASES:
            if args.only and case.name not in args.only:
                continue
            info = write_case(case, args.out, Path(tmp))
            summary.append(info)
            print(json.dumps(info))
    if stub is not None:
        shutil.rmtree(stub, ignore_errors=True)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
