"""``make_xvla_plus_pre_post_processors``: the pipelines LeRobot saves beside the weights.

They hold transport only: renaming, the batch dimension, the device, and LeRobot's (un)normalizer with
IDENTITY modes (X-VLA takes raw states and actions; the steps are there so that LeRobot's usual
overrides apply). Every X-VLA step (cameras resized and ImageNet-normalised, the state padded, the
instruction tokenized, the domain id) runs inside the policy, in ``xvla``'s one
``ObservationProcessor``: the same object ``xvla.XVLAPolicy`` uses, so lerobot-train, lerobot-eval,
lerobot-record and the async server give the model the same inputs as ``xvla`` itself.
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from .configuration_xvla_plus import XVLAPlusConfig


def make_xvla_plus_pre_post_processors(
    config: XVLAPlusConfig, dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    features = {**(config.input_features or {}), **(config.output_features or {})}
    pre = PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](
        steps=[
            RenameObservationsProcessorStep(rename_map={}),
            AddBatchDimensionProcessorStep(),
            DeviceProcessorStep(device=config.device),
            NormalizerProcessorStep(
                features=features, norm_map=config.normalization_mapping, stats=dataset_stats
            ),
        ],
        name=POLICY_PREPROCESSOR_DEFAULT_NAME,
    )
    post = PolicyProcessorPipeline[PolicyAction, PolicyAction](
        steps=[
            UnnormalizerProcessorStep(
                features=config.output_features or {},
                norm_map=config.normalization_mapping,
                stats=dataset_stats,
            ),
            DeviceProcessorStep(device="cpu"),
        ],
        name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return pre, post
