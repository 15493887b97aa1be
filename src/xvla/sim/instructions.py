"""Task names, task sets and one instruction per Meta-World task, written for this project.

Each instruction says in plain words what success means for the task, the way a person would ask a
robot to do it. Nothing here imports Meta-World, so task sets can be listed without the simulator.
"""

from __future__ import annotations

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut by its handle and slide it down onto the peg",
    "basketball-v3": "grab the ball and drop it through the hoop",
    "bin-picking-v3": "move the little cube from one bin into the other bin",
    "box-close-v3": "lift the lid and put it on the box to close it",
    "button-press-topdown-v3": "push the button down from above",
    "button-press-topdown-wall-v3": "reach over the wall and push the button down from above",
    "button-press-v3": "press the button in from the front",
    "button-press-wall-v3": "reach past the wall and press the button in from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "slide the mug under the coffee machine spout",
    "dial-turn-v3": "turn the dial on the table",
    "disassemble-v3": "lift the nut up and off the peg",
    "door-close-v3": "swing the open door shut",
    "door-lock-v3": "turn the knob on the door to lock it",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the knob on the door to unlock it",
    "hand-insert-v3": "lower the gripper into the hole in the table",
    "drawer-close-v3": "push the drawer shut",
    "drawer-open-v3": "pull the drawer out by its handle",
    "faucet-open-v3": "rotate the faucet handle to turn the water on",
    "faucet-close-v3": "rotate the faucet handle to turn the water off",
    "hammer-v3": "pick up the hammer and knock the nail into the wall",
    "handle-press-side-v3": "push the handle down, coming in from the side",
    "handle-press-v3": "push the handle straight down",
    "handle-pull-side-v3": "pull the handle up, coming in from the side",
    "handle-pull-v3": "pull the handle straight up",
    "lever-pull-v3": "swing the lever up",
    "pick-place-wall-v3": "pick up the puck, lift it over the wall and set it on the target",
    "pick-out-of-hole-v3": "lift the peg up out of its hole",
    "pick-place-v3": "pick up the puck and set it down on the target",
    "plate-slide-v3": "slide the plate forward into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the cabinet toward you",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "pick up the peg and push it sideways into the hole in the box",
    "peg-unplug-side-v3": "pull the peg sideways out of the socket",
    "soccer-v3": "knock the ball into the goal",
    "stick-push-v3": "grab the stick and use it to push the bottle to the target",
    "stick-pull-v3": "grab the stick and use it to pull the bottle to the target",
    "push-v3": "push the puck along the table onto the target",
    "push-wall-v3": "push the puck around the wall onto the target",
    "push-back-v3": "push the puck backward onto the target",
    "reach-v3": "move the gripper to the red target point",
    "reach-wall-v3": "move the gripper over the wall to the red target point",
    "shelf-place-v3": "pick up the block and put it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole in the table",
    "sweep-v3": "sweep the puck off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window shut",
}

# The fifty tasks in Meta-World's own order (their index seeds the layouts, see metaworld_env.episode_seed).
ALL_TASKS: tuple[str, ...] = tuple(INSTRUCTIONS)

TASK_SETS: dict[str, tuple[str, ...]] = {
    "mt10": (
        "reach-v3",
        "push-v3",
        "pick-place-v3",
        "door-open-v3",
        "drawer-open-v3",
        "drawer-close-v3",
        "button-press-topdown-v3",
        "peg-insert-side-v3",
        "window-open-v3",
        "window-close-v3",
    ),
    "mt50": ALL_TASKS,
    # Tasks the experts solve quickly (short episodes): what the CPU demo trains on.
    "easy": ("reach-v3", "button-press-topdown-v3", "drawer-close-v3", "door-open-v3", "window-open-v3"),
}


def instruction(task: str) -> str:
    """The language instruction for a Meta-World task name (``'reach'`` or ``'reach-v3'``)."""
    return INSTRUCTIONS[canonical_task(task)]


def canonical_task(task: str) -> str:
    """'reach' -> 'reach-v3'; unknown names raise a ValueError that lists close matches."""
    name = task.strip()
    if name in INSTRUCTIONS:
        return name
    if f"{name}-v3" in INSTRUCTIONS:
        return f"{name}-v3"
    import difflib

    close = difflib.get_close_matches(name, list(INSTRUCTIONS), n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"unknown Meta-World task {task!r}.{hint} Tasks are the 50 Meta-World v3 names (e.g. 'reach-v3'); "
        f"task sets: {sorted(TASK_SETS)}"
    )


def resolve_tasks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'mt10', 'mt50', 'easy', or a comma-separated list of task names (sets and names may be mixed)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        names = TASK_SETS.get(item.lower(), None)
        for name in names if names is not None else (canonical_task(item),):
            if name not in tasks:
                tasks.append(name)
    if not tasks:
        raise ValueError(f"no task selected by {spec!r}: give a task set ({sorted(TASK_SETS)}) or task names")
    return tasks
