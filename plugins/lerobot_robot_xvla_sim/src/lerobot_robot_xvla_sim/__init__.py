"""LeRobot robot plugin ``xvla_metaworld`` (test-only): ``xvla.sim.MetaWorldEnv`` as a LeRobot ``Robot``.

    python -m lerobot.async_inference.robot_client --robot.type=xvla_metaworld --robot.task=reach-v3 ...

Observations: ``x``, ``y``, ``z``, ``gripper`` (floats) and the ``main`` and ``wrist`` cameras (HxWx3 uint8).
Actions: ``dx``, ``dy``, ``dz``, ``grip`` (the Sawyer variant's 4-D action). With ``log_path`` every
executed action is appended to a JSON-lines file with the wall-clock time it was sent.
"""

from .robot import XVLASimMetaWorld, XVLASimMetaWorldConfig

__all__ = ["XVLASimMetaWorld", "XVLASimMetaWorldConfig"]
