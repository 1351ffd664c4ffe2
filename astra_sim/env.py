"""The environment interface every simulator bridge implements, and a name -> env registry.

Demonstration recording (:mod:`astra_sim.demos`) and closed-loop evaluation
(:mod:`astra_sim.evaluate`) only talk to this protocol, so a new simulator (ManiSkill3 with 6-D
pose actions, Meta-World, a ROS-driven arm) plugs in by implementing it and adding one line to
:data:`ENV_FACTORIES`. Factories are import strings so that optional simulators are imported only
when they are asked for.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from astra_core.action_space import ActionSpaceSpec

Observation = dict[str, np.ndarray]  # camera name -> uint8 (H, W, 3) RGB


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
