"""Process-group set-up for ``torchrun`` / ``accelerate launch`` (both set RANK, WORLD_SIZE, ...).

DDP by default (gloo on CPU, nccl on GPU); ``--fsdp`` shards parameters, gradients and optimizer
state with FSDP2 (``torch.distributed.fsdp.fully_shard``), one unit per transformer / encoder block.
"""

from __future__ import annotations

import datetime
import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..utils import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(preference: str = "auto") -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return DistEnv(device=device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
        owns = True
    return DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        owns_group=owns,
    )


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(env: DistEnv, value):
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(env: DistEnv, tensor: torch.Tensor) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= env.world_size
    return tensor


def wrap_ddp(module: nn.Module, env: DistEnv) -> nn.Module:
    if not env.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [env.device.index] if env.device.type == "cuda" else None
    # The only buffer (Florence's temporal table) is a constant: no need to sync it every forward.
    import inspect

    sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DDP).parameters
        else {"broadcast_buffers": False}
    )
    # Depthwise conv weights [C, 1, k, k] have a size-1 dim whose stride differs from their grads':
    # harmless, but DDP warns about it on every backward.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return DDP(module, device_ids=ids, find_unused_parameters=False, **sync)


def shard_fsdp(policy: nn.Module, env: DistEnv, bf16: bool = False) -> None:
    """FSDP2 in place: each action-transformer block and BART encoder layer, then the whole model.

    The DaViT vision tower stays in the root unit: its blocks return views, which FSDP2 units must not.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    model = policy.model
    units: list[nn.Module] = list(model.transformer.blocks)
    units += list(model.vlm.language_model.encoder.layers)
    for unit in units:
        fully_shard(unit, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def no_sync(module: nn.Module, active: bool):
    if active and hasattr(module, "no_sync"):
        return module.no_sync()
    return nullcontext()
