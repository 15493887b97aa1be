"""Any X-VLA checkpoint -> a folder LeRobot's ``--policy.path`` takes (config, weights, processors).

    python -m lerobot_policy_xvla_plus.export SOURCE DESTINATION

SOURCE is any folder or Hub id ``xvla`` reads (ours, a LeRobot ``xvla`` release, an official release).
DESTINATION is in ``xvla``'s format with LeRobot's fields added: ``xvla.XVLAPolicy.from_pretrained`` reads it
as well. ``lerobot-train`` checkpoints of ``xvla_plus`` need no export.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lerobot.configs.types import FeatureType, PolicyFeature

from .modeling_xvla_plus import XVLAPlusPolicy
from .processor_xvla_plus import make_xvla_plus_pre_post_processors


def export(source: str | Path, destination: str | Path) -> Path:
    policy = XVLAPlusPolicy.from_pretrained(source)
    config, cfg = policy.config, policy.xvla.config
    if not config.input_features:  # what LeRobot's robot_client / lerobot-record match the robot against
        size = tuple(cfg.image_size or cfg.resize_imgs_with_padding or (224, 224))
        config.input_features = {
            k: PolicyFeature(FeatureType.VISUAL, (3, *size)) for k in cfg.image_keys or []
        }
        if cfg.use_proprio:
            config.input_features["observation.state"] = PolicyFeature(
                FeatureType.STATE, (cfg.max_state_dim,)
            )
    if not config.output_features:
        width = cfg.real_action_dim or policy.xvla.model.real_action_dim
        config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (width,))}
    try:
        _ = policy.xvla.processor.tokenizer  # loaded now, its files are saved beside the weights
    except OSError:
        pass  # not reachable here: the folder names it (tokenizer_name), as LeRobot releases do
    destination = Path(destination)
    policy.save_pretrained(destination)
    pre, post = make_xvla_plus_pre_post_processors(config)
    pre.save_pretrained(destination)
    post.save_pretrained(destination)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lerobot_policy_xvla_plus.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source")
    parser.add_argument("destination")
    args = parser.parse_args(argv)
    print(export(args.source, args.destination))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
