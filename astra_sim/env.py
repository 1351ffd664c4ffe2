"""The environment interface every simulator backend implements, and a name -> env registry.

Demonstration recording (:mod:`astra_sim.demos`), closed-loop evaluation
(:mod:`astra_sim.evaluate`) and the ROS bridge node only talk to this protocol, so a simulator
(the built-in tabletop, ManiSkill3 with 6-D pose actions, Meta-World) plugs in by implementing it
and adding one line to :data:`ENV_FACTORIES`. Factories are import strings so that optional
simulators are imported only when they are asked for.

What a policy may see of a step is an :class:`Observation`: the camera images, optionally an
instance-label mask per camera (what object tokens are cut from; a simulator renders them, a real
robot gets them from a segmenter) and optionally proprioception. Nothing else about the simulator's
state reaches the policy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Protocol, runtime_checkable

import numpy as np

from astra_core.action_space import ActionSpaceSpec


@dataclass
class Observation:
    """What the policy can observe at one step."""

    images: dict[str, np.ndarray]  # camera -> uint8 (H, W, 3) RGB
    # camera -> (H, W) integer instance labels of the same image: 0 is background, every other
    # value one object instance (the same value may mean different objects in different cameras).
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    proprio: Optional[np.ndarray] = None  # (P,) float64 in the env's proprio_names order


class StepResult(NamedTuple):
    """What :meth:`Env.step` returns; unpacks as ``obs, success, done, info``."""

    observation: Observation
    success: bool  # the instruction's goal holds now
    done: bool  # success, or the step limit was reached; call reset() before stepping again
    info: dict[str, Any]


@runtime_checkable
class Env(Protocol):
    """A language-conditioned manipulation task with physical-unit actions.

    ``reset(seed)`` is deterministic: the same seed gives the same scene and instruction.
    ``expert_action()`` is a scripted expert's next action for the current state (used to record
    demonstrations); it must solve the task from any state that ``reset`` returns.

    ``sensor_info()`` describes what the observations carry beyond images, as written into a
    dataset (``astra_core.data``): ``{"proprio_names": [...], "masks": bool,
    "calibration": {camera: {"table_homography": 3x3 nested list}}, "tolerances": {dim: float}}``.
    ``table_homography`` maps normalised image coordinates ``(u, v, 1)`` (u = column / width,
    v = row / height, both in [0, 1]) to the action frame's ``(x, y, 1)`` on the work surface, so
    a token cut from that camera can say where on the table it is. ``tolerances`` gives, per action
    dimension, how far from the expert's value an action still succeeds (for hit-rate metrics).
    Every key is optional.
    """

    @property
    def camera_names(self) -> list[str]: ...

    @property
    def image_size(self) -> tuple[int, int]: ...  # (height, width) of every camera

    @property
    def action_space(self) -> ActionSpaceSpec: ...

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]: ...  # (low, high), physical units

    @property
    def control_rate_hz(self) -> float: ...

    def sensor_info(self) -> dict[str, Any]: ...

    def reset(self, seed: int) -> tuple[Observation, str]: ...

    def step(self, action: np.ndarray) -> StepResult: ...

    def expert_action(self) -> np.ndarray: ...


# Registered environments: name -> "module:factory". A factory takes keyword options.
ENV_FACTORIES: dict[str, str] = {
    "tabletop": "astra_sim.tabletop:TabletopEnv.from_options",
    "maniskill": "astra_sim.maniskill:ManiSkillEnv.from_options",
    "metaworld": "astra_sim.metaworld:MetaWorldEnv.from_options",
}


def make_env(name: str, **options: Any) -> Env:
    """Build a registered environment (``name`` in :data:`ENV_FACTORIES`) or ``module:factory``."""
    target = ENV_FACTORIES.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown environment {name!r}; registered: {sorted(ENV_FACTORIES)} (or 'module:factory')")
    module_name, _, attr_path = target.partition(":")
    factory: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        factory = getattr(factory, attr)
    env = factory(**options)
    if not isinstance(env, Env):
        raise TypeError(f"environment factory {target!r} returned {type(env).__name__}, which is not an astra_sim Env")
    return env
