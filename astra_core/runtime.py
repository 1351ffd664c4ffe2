"""Streaming inference: the ROS-free policy object used by the ROS node and the simulators.

    policy = AstraPolicy.from_checkpoint("runs/tiny/best")
    policy.reset("pick up the red cube")
    out = policy.step({"front": rgb, "wrist": rgb})     # -> StepOutput (physical action)
    out = policy.step(images, masks={"front": labels, ...}, proprio=pose)   # object tokens / proprio
    policy.record_executed(clipped_action)              # what the robot really did

Cost per step does not grow with the history (beyond attending over it): the keys/values of past
segments are cached. That is exact, not an approximation: attention between segments is causal,
so tokens of earlier segments never change when later ones arrive, and the action queries are
invisible to every token, so they never enter the cache. Each observation is encoded once.

The history holds the actions that were *executed* (``record_executed``), which can differ from
the proposal after safety clipping. If ``record_executed`` is not called before the next
``step``, the proposal is taken as executed.

Context window: the model was built for at most ``max_timesteps`` steps. When a new state would
not fit, the runtime keeps the newest ``keep_steps`` steps (default: half the window), renumbers
their timesteps from 0 and re-encodes them from the cached state features in one transformer pass
(the prompt's keys/values stay, since the prompt never sees the steps). So the model always sees
between ``keep_steps + 1`` and ``max_timesteps`` steps, as in training, where windows start
anywhere in an episode and timesteps count from the window's start. ``FullRecomputePolicy``
applies the same rule, which makes it an exact reference for the streaming one.

Observations go through the same code as in training: masks become object boxes with
:func:`astra_core.objects.boxes_from_mask` (the data loader's function), and images and boxes are
encoded by ``Astra.encode_states``.

Not thread-safe: drive one policy from one thread (the ROS node uses a worker thread).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from astra_core.layout import TokenLayout
from astra_core.model import Astra, AstraOutput, KVCache, States
from astra_core.objects import OBJECT_FIELDS, boxes_from_mask, count_instances


@dataclass
class StepOutput:
    values: np.ndarray  # (N,) physical units, float64
    model_values: np.ndarray  # (N,) bin indices (discrete) or normalised values (continuous)
    step: int  # steps since reset, 0-based
    latency_ms: float
    head_output: np.ndarray  # (N, K) logits (discrete) or (N, 1) normalised values (continuous)
    # readout=pointer: per position pair, the index of the chosen state token of this step
    pointer_choice: Optional[np.ndarray] = None
    dropped_objects: int = 0  # instances beyond max_objects that got no token (the smallest)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Observation:
    """One step's checked inputs as tensors (batch and time dimensions of size 1)."""

    images: list[torch.Tensor]  # per camera (1, 1, H, W, 3) uint8
    object_boxes: Optional[torch.Tensor]  # (1, 1, C, K, 6)
    object_valid: Optional[torch.Tensor]  # (1, 1, C, K)
    proprio: Optional[torch.Tensor]  # (1, 1, P)
    dropped_objects: int = 0


@dataclass
class _StepRecord:
    state: States  # this step's state tokens (B = T = 1), before camera/time embeddings
    observation: Optional[Observation]  # raw inputs; kept only by the full-recompute reference
    action: Optional[torch.Tensor] = None  # executed action in model form (N,)


def _cat_steps(records: list[_StepRecord]) -> States:
    return States(*(torch.cat(parts, dim=1) for parts in zip(*(
        (r.state.features, r.state.valid, r.state.coords, r.state.has_coords) for r in records))))


class _PolicyBase:
    """Instruction, window bookkeeping and input checks shared by both policies."""

    def __init__(self, model: Astra, device: Optional[str] = None, keep_steps: Optional[int] = None) -> None:
        self.device = torch.device(device or default_device())
        self.model = model.to(self.device).eval()
        self.max_steps = model.cfg.max_timesteps
        self.keep_steps = self.max_steps // 2 if keep_steps is None else int(keep_steps)
        if not 0 <= self.keep_steps < self.max_steps:
            raise ValueError(f"keep_steps={keep_steps} must be in [0, max_timesteps={self.max_steps})")
        self.instruction: Optional[str] = None
        self.steps_since_reset = 0
        self._history: deque[_StepRecord] = deque(maxlen=self.max_steps)
        self._last_proposal: Optional[torch.Tensor] = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: Optional[str] = None, **kwargs):
        from astra_core.checkpoint import load_checkpoint

        return cls(load_checkpoint(path, device=device or default_device()), device=device, **kwargs)

    @property
    def camera_names(self) -> list[str]:
        return self.model.camera_names

    @property
    def action_space(self):
        return self.model.action_space

    @property
    def needs_masks(self) -> bool:
        """The checkpoint uses object tokens: every step needs an instance mask per camera."""
        return self.model.cfg.state_tokens == "objects"

    @property
    def proprio_dim(self) -> int:
        """Values of proprioception every step needs (0: none)."""
        return self.model.cfg.proprio_dim

    @property
    def history_length(self) -> int:
        """Steps currently in the model's context window."""
        return len(self._history)

    def reset(self, instruction: str) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        self.instruction = instruction
        self.steps_since_reset = 0
        self._history.clear()
        self._last_proposal = None

    def record_executed(self, values: np.ndarray) -> None:
        """Record the action the robot executed for the last step (physical units, shape (N,))."""
        if not self._history or self._last_proposal is None:
            raise RuntimeError("record_executed() called before step()")
        values = np.asarray(values, dtype=np.float64)
        n = self.action_space.dim
        if values.shape != (n,):
            raise ValueError(f"executed action must have shape ({n},), got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"executed action has non-finite values: {values}")
        model_form = self.action_space.to_model(torch.from_numpy(values).to(self.device))
        self._history[-1].action = model_form
        self._last_proposal = None

    def _observation(self, images: Mapping[str, np.ndarray], masks: Optional[Mapping[str, np.ndarray]],
                     proprio: Optional[np.ndarray]) -> Observation:
        """Check one step's inputs and turn them into tensors; every problem raises ValueError."""
        if self.instruction is None:
            raise RuntimeError("call reset(instruction) before step()")
        names = self.camera_names
        missing = [c for c in names if c not in images]
        extra = [c for c in images if c not in names]
        if missing or extra:
            raise ValueError(f"cameras must be exactly {names}; missing {missing}, unexpected {extra}")
        frames = []
        for name in names:
            img = images[name]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
                raise ValueError(f"camera '{name}': expected uint8 HxWx3 RGB, got {desc}")
            if img.shape[0] < 2 or img.shape[1] < 2:
                raise ValueError(f"camera '{name}': image {img.shape} is too small")
            # Frames may be read-only views of a ROS message buffer: copy those (a frame is small).
            frames.append(torch.from_numpy(np.ascontiguousarray(img) if img.flags.writeable else img.copy())
                          .to(self.device)[None, None])
        obs = Observation(frames, None, None, None)
        if self.needs_masks:
            obs.object_boxes, obs.object_valid, obs.dropped_objects = self._objects(masks, images)
        elif masks:
            raise ValueError(f"instance masks given, but this checkpoint uses {self.model.cfg.state_tokens!r} "
                             "state tokens, not object tokens")
        if self.proprio_dim:
            p = np.asarray(proprio if proprio is not None else [], dtype=np.float64)
            if p.shape != (self.proprio_dim,) or not np.isfinite(p).all():
                raise ValueError(f"proprio: expected {self.proprio_dim} finite values, got {p.tolist()}")
            obs.proprio = torch.from_numpy(p).float().to(self.device)[None, None]
        elif proprio is not None:
            raise ValueError("proprio given, but this checkpoint was trained without proprioception")
        return obs

    def _objects(self, masks: Optional[Mapping[str, np.ndarray]], images: Mapping[str, np.ndarray]):
        K = self.model.cfg.max_objects
        if not masks:
            raise ValueError("this checkpoint uses object tokens: step() needs an instance mask per camera")
        boxes = np.zeros((len(self.camera_names), K, OBJECT_FIELDS), np.float32)
        valid = np.zeros((len(self.camera_names), K), bool)
        dropped = 0
        for m, name in enumerate(self.camera_names):
            mask = masks.get(name)
            if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
                desc = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
                raise ValueError(f"camera '{name}': expected an (H, W) integer instance mask, got {desc}")
            if mask.shape != images[name].shape[:2]:
                raise ValueError(f"camera '{name}': mask {mask.shape} and image {images[name].shape[:2]} differ in size")
            boxes[m], valid[m] = boxes_from_mask(mask, K)
            dropped += max(0, count_instances(mask) - K)
        return (torch.from_numpy(boxes).to(self.device)[None, None],
                torch.from_numpy(valid).to(self.device)[None, None], dropped)

    def _encode(self, observations: list[Observation]) -> States:
        """Observations of consecutive steps -> their state tokens (B = 1, T = len)."""
        model = self.model

        def cat(get) -> Optional[torch.Tensor]:
            parts = [get(o) for o in observations]
            return None if parts[0] is None else torch.cat(parts, dim=1)

        images = [torch.cat([o.images[m] for o in observations], dim=1) for m in range(len(self.camera_names))]
        return model.encode_states(images, cat(lambda o: o.object_boxes), cat(lambda o: o.object_valid),
                                   cat(lambda o: o.proprio))

    def _checked_state(self, obs: Observation) -> States:
        """The step's state tokens, refused before anything of the step enters the history."""
        state = self._encode([obs])
        if self.model.position_pairs and not bool(state.has_coords.any()):
            raise ValueError("no state token with table coordinates at this step (empty instance masks?): "
                             "the pointer readout cannot place the action")
        return state

    def _commit_pending_proposal(self) -> None:
        if self._history and self._history[-1].action is None and self._last_proposal is not None:
            self._history[-1].action = self._last_proposal  # not recorded: assume executed
        self._last_proposal = None

    def _finish(self, out: AstraOutput, state: States, start: float, dropped: int) -> StepOutput:
        """Decode the current step's predictions (B = T = 1)."""
        physical, model_values = self.model.decode(out, state)
        model_values = model_values[0, 0]
        self._last_proposal = model_values
        result = StepOutput(
            values=physical[0, 0].cpu().numpy(),
            model_values=model_values.cpu().numpy(),
            step=self.steps_since_reset,
            latency_ms=(time.perf_counter() - start) * 1e3,
            head_output=out.head[0, 0].float().cpu().numpy(),
            pointer_choice=None if out.pointer_choice is None else out.pointer_choice[0, 0].cpu().numpy(),
            dropped_objects=dropped,
        )
        self.steps_since_reset += 1
        return result


def last_step(out: AstraOutput) -> AstraOutput:
    """The predictions of a window's last step (T = 1)."""
    return AstraOutput(*(None if x is None else x[:, -1:]
                         for x in (out.head, out.pointer_logits, out.pointer_offset, out.pointer_choice)))


def _splice_outputs(stages: list[AstraOutput], model: Astra) -> AstraOutput:
    """Autoregressive decoding: dimension i's prediction comes from stage i (after a_<i were fed).

    A pointer pair's prediction comes from the stage of its first dimension."""
    head = torch.stack([stage.head[:, :, i] for i, stage in enumerate(stages)], dim=2)
    if stages[0].pointer_logits is None:
        return AstraOutput(head)
    firsts = [x for x, _ in model.position_pairs]
    logits, offset, choice = (torch.stack([getattr(stages[x], name)[:, :, g] for g, x in enumerate(firsts)], dim=2)
                              for name in ("pointer_logits", "pointer_offset", "pointer_choice"))
    return AstraOutput(head, logits, offset, choice)


class AstraPolicy(_PolicyBase):
    """Streaming policy with a key/value cache (the one to deploy).

    ``fuse=True`` (default) folds the vision encoder's frozen BatchNorms into its convolutions and
    switches it to channels-last memory: the same function up to float rounding, ~40% less
    encoder time for a pretrained ResNet-18 on CPU. It changes the model in place, so a model
    given to a fused policy is for inference only from then on.
    """

    def __init__(self, model: Astra, device: Optional[str] = None, keep_steps: Optional[int] = None,
                 fuse: bool = True) -> None:
        super().__init__(model, device, keep_steps)
        if fuse:
            self.model.vision.fuse_for_inference()

    def reset(self, instruction: str) -> None:
        super().reset(instruction)
        cfg, model = self.model.cfg, self.model
        with torch.inference_mode():
            prompt, _ = model.encode_prompt([instruction])  # one instruction: no padding
            self._prompt_len = prompt.shape[1]
            M, N = model.state_len, model.action_space.dim
            capacity = self._prompt_len + self.max_steps * (M + N) + N
            self._cache = KVCache(cfg, 1, capacity, self.device, prompt.dtype)
            self._cache_pos: list[int] = []  # layout position of every cached token
            self._cache_valid: list[bool] = []  # may it be attended to (empty object slots: no)
            self._run(prompt, list(range(self._prompt_len)), [True] * self._prompt_len, steps=0,
                      commit=self._prompt_len)
        self._uncommitted: list[tuple[torch.Tensor, list[int], list[bool]]] = []

    def _layout(self, steps: int) -> TokenLayout:
        return TokenLayout(self._prompt_len, self.model.state_len, self.action_space.dim, steps,
                           self.model.uses_queries)

    def _run(self, tokens: torch.Tensor, positions: list[int], valid: list[bool], steps: int,
             commit: int) -> torch.Tensor:
        """Append ``tokens`` (1, S, E) at layout ``positions``; keep the first ``commit`` in the cache."""
        full = self.model.layout_mask(self._layout(steps), torch.device("cpu"))
        mask = full[positions][:, self._cache_pos + positions] & torch.tensor(self._cache_valid + valid)[None]
        hidden = self.model.forward_tokens(tokens, mask.to(self.device)[None, None], self._cache)
        self._cache.length += commit
        self._cache_pos += positions[:commit]
        self._cache_valid += valid[:commit]
        return hidden

    def _restart_window(self) -> None:
        """Context full: keep the newest steps, renumber them from 0, queue them for re-encoding."""
        kept = list(self._history)[-self.keep_steps :] if self.keep_steps else []
        self._history.clear()
        self._history.extend(kept)
        self._cache.length = self._prompt_len
        self._cache_pos = self._cache_pos[: self._prompt_len]
        self._cache_valid = self._cache_valid[: self._prompt_len]
        layout = self._layout(len(kept))
        N = self.action_space.dim
        self._uncommitted = []
        for t, record in enumerate(kept):
            state = self.model.state_tokens(record.state.features, t0=t)[0, 0]
            action = self.model.action_tokens(record.action[None, None], t0=t)[0, 0]
            self._uncommitted.append((state, layout.state_index[t].tolist(), record.state.valid[0, 0].tolist()))
            self._uncommitted.append((action, layout.action_index[t].tolist(), [True] * N))

    @torch.inference_mode()
    def step(self, images: Mapping[str, np.ndarray], masks: Optional[Mapping[str, np.ndarray]] = None,
             proprio: Optional[np.ndarray] = None) -> StepOutput:
        start = time.perf_counter()
        obs = self._observation(images, masks, proprio)
        state = self._checked_state(obs)  # every check before the history changes
        self._commit_pending_proposal()
        model, N = self.model, self.action_space.dim
        if self._history:  # the executed action of the previous step enters the context now
            prev = len(self._history) - 1
            tokens = model.action_tokens(self._history[-1].action[None, None], t0=prev)[0, 0]
            self._uncommitted.append((tokens, self._layout(prev + 1).action_index[prev].tolist(), [True] * N))
        if len(self._history) == self.max_steps:
            self._restart_window()

        t = len(self._history)
        self._history.append(_StepRecord(state, None))
        layout = self._layout(t + 1)
        parts = self._uncommitted + [
            (model.state_tokens(state.features, t0=t)[0, 0], layout.state_index[t].tolist(), state.valid[0, 0].tolist())
        ]
        self._uncommitted = []
        tokens = torch.cat([p[0] for p in parts])[None]
        positions = [i for p in parts for i in p[1]]
        valid = [v for p in parts for v in p[2]]
        M = model.state_len
        if model.uses_queries:
            queries = model.query_tokens(1, 1, t0=t)[0, 0]
            hidden = self._run(torch.cat([tokens, queries[None]], 1), positions + layout.query_index[t].tolist(),
                               valid + [True] * N, steps=t + 1, commit=len(positions))
            out = model.readout(hidden[:, None, -N:], hidden[:, None, -N - M : -N], state)
        else:
            out = self._decode_autoregressive(tokens, positions, valid, layout, t, state)
        return self._finish(out, state, start, obs.dropped_objects)

    def _decode_autoregressive(self, tokens: torch.Tensor, positions: list[int], valid: list[bool],
                               layout: TokenLayout, t: int, state: States) -> AstraOutput:
        """Gato-like ablation: one pass per dimension, each fed the previous predicted dimension.

        The proposed dimensions are cached only while decoding: the executed action replaces them.
        """
        model, N, M = self.model, self.action_space.dim, self.model.state_len
        hidden = self._run(tokens, positions, valid, steps=t + 1, commit=len(positions))
        state_hidden = hidden[:, None, -M:]
        mark_len, mark_pos = self._cache.length, len(self._cache_pos)
        read = torch.zeros(1, 1, N, hidden.shape[-1], dtype=hidden.dtype, device=self.device)
        read[0, 0, 0] = hidden[0, -1]
        stages = []
        for i in range(N):
            stage = model.readout(read, state_hidden, state)  # dimension i depends on read[<= i] only
            stages.append(stage)
            if i == N - 1:
                break
            _, values = model.decode(stage, state)
            partial = torch.zeros(N, dtype=values.dtype, device=self.device)
            partial[i] = values[0, 0, i]
            token = model.action_tokens(partial[None, None], t0=t)[0, 0, i : i + 1]
            read[0, 0, i + 1] = self._run(token[None], [layout.action_index[t, i].item()], [True], steps=t + 1,
                                          commit=1)[0, -1]
        self._cache.length, self._cache_pos = mark_len, self._cache_pos[:mark_pos]
        self._cache_valid = self._cache_valid[:mark_pos]
        return _splice_outputs(stages, model)


class FullRecomputePolicy(_PolicyBase):
    """Reference policy: re-encodes the whole window (observations included) at every step.

    Same interface and window rule as ``AstraPolicy``; used to check streaming exactness and as
    the baseline in the streaming benchmark. ``reencode_images=False`` reuses each step's state
    features, which isolates the transformer's share of the cost.
    """

    def __init__(self, model: Astra, device: Optional[str] = None, keep_steps: Optional[int] = None,
                 reencode_images: bool = True) -> None:
        super().__init__(model, device, keep_steps)
        self.reencode_images = reencode_images

    @torch.inference_mode()
    def step(self, images: Mapping[str, np.ndarray], masks: Optional[Mapping[str, np.ndarray]] = None,
             proprio: Optional[np.ndarray] = None) -> StepOutput:
        start = time.perf_counter()
        obs = self._observation(images, masks, proprio)
        state = self._checked_state(obs)
        self._commit_pending_proposal()
        if len(self._history) == self.max_steps:
            for _ in range(self.max_steps - self.keep_steps):
                self._history.popleft()
        self._history.append(_StepRecord(state, obs))
        model, N = self.model, self.action_space.dim
        history = list(self._history)
        states = self._encode([r.observation for r in history]) if self.reencode_images else _cat_steps(history)
        # The last step's action is unknown; queries (or the token before a_1) never see it.
        filler = torch.zeros(N, dtype=torch.long if self.action_space.is_discrete else torch.float32,
                             device=self.device)
        actions = torch.stack([r.action if r.action is not None else filler for r in history])[None]
        prompt, prompt_mask = model.encode_prompt([self.instruction])
        last = states.map(lambda x: x[:, -1:])
        if model.uses_queries:
            out = model(prompt, prompt_mask, states, actions)
            out = last_step(out)
        else:
            out = self._decode_autoregressive(prompt, prompt_mask, states, actions, last)
        return self._finish(out, last, start, obs.dropped_objects)

    def _decode_autoregressive(self, prompt, prompt_mask, states: States, actions, last: States) -> AstraOutput:
        stages = []
        for i in range(self.action_space.dim):
            out = self.model(prompt, prompt_mask, states, actions)
            stage = last_step(out)
            stages.append(stage)
            actions = actions.clone()
            actions[0, -1, i] = self.model.decode(stage, last)[1][0, 0, i]
        return _splice_outputs(stages, self.model)
