"""Streaming inference: the ROS-free policy object used by the ROS node and the simulators.

    policy = AstraPolicy.from_checkpoint("runs/tiny/best")
    policy.reset("pick up the red cube")
    out = policy.step({"front": rgb, "wrist": rgb})     # -> StepOutput (physical action)
    policy.record_executed(clipped_action)              # what the robot really did

Cost per step does not grow with the history (beyond attending over it): the keys/values of past
segments are cached. That is exact, not an approximation: attention between segments is causal,
so tokens of earlier segments never change when later ones arrive, and the action queries are
invisible to every token, so they never enter the cache. Each image is encoded once.

The history holds the actions that were *executed* (``record_executed``), which can differ from
the proposal after safety clipping. If ``record_executed`` is not called before the next
``step``, the proposal is taken as executed.

Context window: the model was built for at most ``max_timesteps`` steps. When a new state would
not fit, the runtime keeps the newest ``keep_steps`` steps (default: half the window), renumbers
their timesteps from 0 and re-encodes them from the cached image tokens in one transformer pass
(the prompt's keys/values stay, since the prompt never sees the steps). So the model always sees
between ``keep_steps + 1`` and ``max_timesteps`` steps, as in training, where windows start
anywhere in an episode and timesteps count from the window's start. ``FullRecomputePolicy``
applies the same rule, which makes it an exact reference for the streaming one.

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
from astra_core.model import Astra, KVCache


@dataclass
class StepOutput:
    values: np.ndarray  # (N,) physical units, float64
    model_values: np.ndarray  # (N,) bin indices (discrete) or normalised values (continuous)
    step: int  # steps since reset, 0-based
    latency_ms: float
    head_output: np.ndarray  # (N, K) logits (discrete) or (N, 1) normalised values (continuous)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _StepRecord:
    image_tokens: torch.Tensor  # (M, E), projected, before camera/time embeddings
    images: Optional[list[np.ndarray]]  # raw frames; kept only by the full-recompute reference
    action: Optional[torch.Tensor] = None  # executed action in model form (N,)


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

    def _check_images(self, images: Mapping[str, np.ndarray]) -> list[np.ndarray]:
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
            frames.append(img)
        return frames

    def _encode_frames(self, frames: list[np.ndarray]) -> torch.Tensor:
        """Frames of one step -> image tokens (M, E); cameras of different sizes are encoded apart."""
        # Frames may be read-only views of a ROS message buffer: copy those (a frame is small).
        tensors = [torch.from_numpy(np.ascontiguousarray(f) if f.flags.writeable else f.copy()).to(self.device)
                   for f in frames]
        if len({t.shape for t in tensors}) == 1:
            return self.model.encode_images(torch.stack(tensors)[None, None])[0, 0]
        return torch.cat([self.model.encode_images(t[None, None, None])[0, 0] for t in tensors])

    def _commit_pending_proposal(self) -> None:
        if self._history and self._history[-1].action is None and self._last_proposal is not None:
            self._history[-1].action = self._last_proposal  # not recorded: assume executed
        self._last_proposal = None

    def _finish(self, head_out: torch.Tensor, start: float) -> StepOutput:
        model_values = self.action_space.decode(head_out)  # (N,)
        self._last_proposal = model_values
        values = self.action_space.from_model(model_values).cpu().numpy()
        out = StepOutput(
            values=values,
            model_values=model_values.cpu().numpy(),
            step=self.steps_since_reset,
            latency_ms=(time.perf_counter() - start) * 1e3,
            head_output=head_out.float().cpu().numpy(),
        )
        self.steps_since_reset += 1
        return out


class AstraPolicy(_PolicyBase):
    """Streaming policy with a key/value cache (the one to deploy)."""

    def reset(self, instruction: str) -> None:
        super().reset(instruction)
        cfg, model = self.model.cfg, self.model
        with torch.inference_mode():
            prompt, _ = model.encode_prompt([instruction])  # one instruction: no padding
            self._prompt_len = prompt.shape[1]
            M, N = len(cfg.cameras), model.action_space.dim
            capacity = self._prompt_len + self.max_steps * (M + N) + N
            self._cache = KVCache(cfg, 1, capacity, self.device, prompt.dtype)
            self._cache_pos: list[int] = []
            self._run(prompt, list(range(self._prompt_len)), steps=0, commit=self._prompt_len)
        self._uncommitted: list[tuple[torch.Tensor, list[int]]] = []

    def _layout(self, steps: int) -> TokenLayout:
        return TokenLayout(self._prompt_len, len(self.camera_names), self.action_space.dim, steps,
                           self.model.uses_queries)

    def _run(self, tokens: torch.Tensor, positions: list[int], steps: int, commit: int) -> torch.Tensor:
        """Append ``tokens`` (1, S, E) at layout ``positions``; keep the first ``commit`` in the cache."""
        full = self.model.layout_mask(self._layout(steps), torch.device("cpu"))
        mask = full[positions][:, self._cache_pos + positions].to(self.device)
        hidden = self.model.forward_tokens(tokens, mask[None, None], self._cache)
        self._cache.length += commit
        self._cache_pos += positions[:commit]
        return hidden

    def _restart_window(self) -> None:
        """Context full: keep the newest steps, renumber them from 0, queue them for re-encoding."""
        kept = list(self._history)[-self.keep_steps :] if self.keep_steps else []
        self._history.clear()
        self._history.extend(kept)
        self._cache.length = self._prompt_len
        self._cache_pos = self._cache_pos[: self._prompt_len]
        layout = self._layout(len(kept))
        self._uncommitted = []
        for t, record in enumerate(kept):
            state = self.model.state_tokens(record.image_tokens[None, None], t0=t)[0, 0]
            action = self.model.action_tokens(record.action[None, None], t0=t)[0, 0]
            self._uncommitted.append((state, layout.state_index[t].tolist()))
            self._uncommitted.append((action, layout.action_index[t].tolist()))

    @torch.inference_mode()
    def step(self, images: Mapping[str, np.ndarray]) -> StepOutput:
        start = time.perf_counter()
        frames = self._check_images(images)
        self._commit_pending_proposal()
        if self._history:  # the executed action of the previous step enters the context now
            prev = len(self._history) - 1
            tokens = self.model.action_tokens(self._history[-1].action[None, None], t0=prev)[0, 0]
            self._uncommitted.append((tokens, self._layout(prev + 1).action_index[prev].tolist()))
        if len(self._history) == self.max_steps:
            self._restart_window()

        t = len(self._history)
        image_tokens = self._encode_frames(frames)
        self._history.append(_StepRecord(image_tokens, None))
        layout = self._layout(t + 1)
        parts = self._uncommitted + [
            (self.model.state_tokens(image_tokens[None, None], t0=t)[0, 0], layout.state_index[t].tolist())
        ]
        self._uncommitted = []
        tokens = torch.cat([p[0] for p in parts])[None]
        positions = [i for p in parts for i in p[1]]
        if self.model.uses_queries:
            queries = self.model.query_tokens(1, 1, t0=t)[0, 0]
            hidden = self._run(torch.cat([tokens, queries[None]], 1), positions + layout.query_index[t].tolist(),
                               steps=t + 1, commit=len(positions))
            head_out = self.model.predict(hidden[:, -queries.shape[0] :][:, None])[0, 0]
        else:
            head_out = self._decode_autoregressive(tokens, positions, layout, t)
        return self._finish(head_out, start)

    def _decode_autoregressive(self, tokens: torch.Tensor, positions: list[int], layout: TokenLayout,
                               t: int) -> torch.Tensor:
        """Gato-like ablation: one pass per dimension, each fed the previous predicted dimension.

        The proposed dimensions are cached only while decoding: the executed action replaces them.
        """
        hidden = self._run(tokens, positions, steps=t + 1, commit=len(positions))
        mark_len, mark_pos = self._cache.length, len(self._cache_pos)
        N = self.action_space.dim
        outs, last = [], hidden[:, -1]
        for i in range(N):
            out_i = (last @ self.model.head_weight[i] + self.model.head_bias[i])[0]
            outs.append(out_i)
            if i == N - 1:
                break
            value = self.action_space.decode(out_i[None])  # (1,)
            partial = torch.zeros(N, dtype=value.dtype, device=self.device)
            partial[i] = value[0]
            token = self.model.action_tokens(partial[None, None], t0=t)[0, 0, i : i + 1]
            last = self._run(token[None], [layout.action_index[t, i].item()], steps=t + 1, commit=1)[:, -1]
        self._cache.length, self._cache_pos = mark_len, self._cache_pos[:mark_pos]
        return torch.stack(outs)


class FullRecomputePolicy(_PolicyBase):
    """Reference policy: re-encodes the whole window (images included) at every step.

    Same interface and window rule as ``AstraPolicy``; used to check streaming exactness and as
    the baseline in the streaming benchmark. ``reencode_images=False`` reuses image tokens, which
    isolates the transformer's share of the cost.
    """

    def __init__(self, model: Astra, device: Optional[str] = None, keep_steps: Optional[int] = None,
                 reencode_images: bool = True) -> None:
        super().__init__(model, device, keep_steps)
        self.reencode_images = reencode_images

    @torch.inference_mode()
    def step(self, images: Mapping[str, np.ndarray]) -> StepOutput:
        start = time.perf_counter()
        frames = self._check_images(images)
        self._commit_pending_proposal()
        if len(self._history) == self.max_steps:
            for _ in range(self.max_steps - self.keep_steps):
                self._history.popleft()
        tokens = None if self.reencode_images else self._encode_frames(frames)
        self._history.append(_StepRecord(tokens, frames))
        model, N = self.model, self.action_space.dim
        if self.reencode_images:
            batch = torch.stack([torch.from_numpy(np.stack(r.images)) for r in self._history]).to(self.device)
            image_tokens = model.encode_images(batch[None])
        else:
            image_tokens = torch.stack([r.image_tokens for r in self._history])[None]
        # The last step's action is unknown; queries (or the token before a_1) never see it.
        filler = torch.zeros(N, dtype=torch.long if self.action_space.is_discrete else torch.float32,
                             device=self.device)
        actions = torch.stack([r.action if r.action is not None else filler for r in self._history])[None]
        prompt, prompt_mask = model.encode_prompt([self.instruction])
        if model.uses_queries:
            head_out = model(prompt, prompt_mask, image_tokens, actions)[0, -1]
        else:
            head_out = self._decode_autoregressive(prompt, prompt_mask, image_tokens, actions)
        return self._finish(head_out, start)

    def _decode_autoregressive(self, prompt, prompt_mask, image_tokens, actions) -> torch.Tensor:
        outs = []
        for i in range(self.action_space.dim):
            out = self.model(prompt, prompt_mask, image_tokens, actions)[0, -1]
            outs.append(out[i])
            actions = actions.clone()
            actions[0, -1, i] = self.action_space.decode(out[i][None])[0]
        return torch.stack(outs)
