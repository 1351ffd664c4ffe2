"""Streaming vs. full-recompute step time: ``python -m astra_core.bench.streaming --preset 38m``.

Prints one JSON object: for each history length h, the median ms of the h-th step of an episode
for (a) a full recompute that re-encodes every image and the whole trajectory, (b) a full recompute
of the transformer with cached image tokens, (c) the streaming runtime (KV cache) as it was
before inference fusion (``streaming_unfused_ms``) and (d) as deployed (``streaming_ms``: BatchNorm
folded into the convolutions, channels-last). The vision encoder defaults to frozen BatchNorm
(``--vision-norm``), what an ImageNet-pretrained ResNet deploys with. Threads, cores and the machine
load are printed with the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import numpy as np
import torch

from astra_core.model import Astra
from astra_core.presets import standalone_config, unit_stats
from astra_core.threads import configure_threads, machine_info
from astra_core.runtime import AstraPolicy, FullRecomputePolicy, default_device


def step_times(policy, cameras, image_size: int, steps: int, repeats: int, seed: int = 0) -> list[float]:
    """Median wall time (ms) of step 1..steps over ``repeats`` episodes (after one warm-up)."""
    rng = np.random.default_rng(seed)
    frames = [{c: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for c in cameras}
              for _ in range(steps)]
    per_step: list[list[float]] = [[] for _ in range(steps)]
    for episode in range(repeats + 1):
        policy.reset("pick up the red cube and place it in the bowl")
        for t in range(steps):
            if policy.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = policy.step(frames[t])
            policy.record_executed(out.values)
            if policy.device.type == "cuda":
                torch.cuda.synchronize()
            if episode:  # episode 0 warms up kernels and allocators
                per_step[t].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(v) for v in per_step]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="38m")
    parser.add_argument("--max-history", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--image-size", type=int, default=None, help="camera frame size (default: the preset's)")
    parser.add_argument("--skip-full", action="store_true", help="time only the streaming runtime")
    parser.add_argument("--vision-norm", default="frozen_batch", choices=["frozen_batch", "group"],
                        help="frozen_batch: a pretrained ResNet's BatchNorm (foldable); group: a scratch-trained one")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    args = parser.parse_args(argv)
    configure_threads(args.threads, "astra_core.bench.streaming")

    cfg = standalone_config(args.preset)
    cfg.vision.norm = args.vision_norm
    cfg.max_timesteps = max(cfg.max_timesteps, args.max_history)
    cfg.dropout = 0.0
    torch.manual_seed(0)
    model = Astra(cfg, unit_stats(cfg.action_space))
    size = args.image_size or cfg.vision.image_size
    steps = args.max_history
    result = {
        "preset": args.preset,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        **machine_info(),
        "vision_norm": args.vision_norm,
        "cameras": len(cfg.cameras),
        "action_dims": model.action_space.dim,
        "image_size": size,
        "repeats": args.repeats,
        "history": list(range(1, steps + 1)),
    }
    result["streaming_unfused_ms"] = step_times(AstraPolicy(copy.deepcopy(model), args.device, fuse=False),
                                                cfg.cameras, size, steps, args.repeats)
    result["streaming_ms"] = step_times(AstraPolicy(copy.deepcopy(model), args.device), cfg.cameras, size, steps,
                                        args.repeats)
    if not args.skip_full:
        full = FullRecomputePolicy(model, args.device, reencode_images=True)
        result["full_recompute_ms"] = step_times(full, cfg.cameras, size, steps, args.repeats)
        cached = FullRecomputePolicy(model, args.device, reencode_images=False)
        result["full_recompute_cached_images_ms"] = step_times(cached, cfg.cameras, size, steps, args.repeats)
        at = min(16, steps) - 1
        result["speedup_at_16"] = {
            "vs_full_recompute": round(result["full_recompute_ms"][at] / result["streaming_ms"][at], 2),
            "vs_full_recompute_cached_images": round(
                result["full_recompute_cached_images_ms"][at] / result["streaming_ms"][at], 2),
        }
    result["load_after"] = machine_info()["loadavg_1min"]
    for key in ("streaming_unfused_ms", "streaming_ms", "full_recompute_ms", "full_recompute_cached_images_ms"):
        if key in result:
            result[key] = [round(v, 2) for v in result[key]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
