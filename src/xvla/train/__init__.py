"""Training: recipes, dataset mixtures, per-group optimisation, checkpoints/resume, DDP/FSDP.

    from xvla.train import TrainConfig, build_train_config, train
    cfg = build_train_config({"dataset": {"root": "data/pick"}, "policy": {"path": "ckpt"}, "steps": 1000})
    result = train(cfg)               # result.final_model_dir loads with XVLAPolicy.from_pretrained

The command line is ``xvla train`` (see ``docs/training.md``).
"""

import importlib

_EXPORTS = {
    "PARAM_GROUPS": "config",
    "RECIPES": "config",
    "ColorJitterConfig": "config",
    "DatasetConfig": "config",
    "LoraConfig": "config",
    "MixtureConfig": "config",
    "NewDomainConfig": "config",
    "OptimizerConfig": "config",
    "SchedulerConfig": "config",
    "TrainConfig": "config",
    "build_train_config": "config",
    "DrawStream": "mixture",
    "MixtureBatchSampler": "mixture",
    "MixtureDataset": "mixture",
    "GroupLRScheduler": "optim",
    "GroupSchedule": "optim",
    "build_optimizer": "optim",
    "build_schedules": "optim",
    "DomainRowKeeper": "params",
    "group_of": "params",
    "TrainResult": "trainer",
    "train": "trainer",
}


def __getattr__(name: str):
    # Lazy: `xvla --help` imports xvla.train.cli, which should not pull in torch and transformers.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PARAM_GROUPS",
    "RECIPES",
    "ColorJitterConfig",
    "DatasetConfig",
    "DomainRowKeeper",
    "DrawStream",
    "GroupLRScheduler",
    "GroupSchedule",
    "LoraConfig",
    "MixtureBatchSampler",
    "MixtureConfig",
    "MixtureDataset",
    "NewDomainConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_schedules",
    "build_train_config",
    "group_of",
    "train",
]
