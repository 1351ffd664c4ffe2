"""Training throughput of trajectory attention vs causal attention at equal model size.

``python -m astra_core.bench.train_throughput --preset tiny`` prints one JSON object with training
samples/s (forward + backward + AdamW step, BC loss; ``--cdl-alpha`` adds CDL) for both attention
types on the same batch, the median over ``--repeats`` timed blocks, and the relative overhead of
trajectory attention. Both variants are built from the same seed, so only the mask differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from astra_core.model import Astra
from astra_core.presets import standalone_config, unit_stats
from astra_core.training.config import TrainConfig
from astra_core.training.loop import AstraObjective, build_optimizer


def _batch(cfg, batch_size: int, window: int, image_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    M, N, K = len(cfg.cameras), cfg.action_space.dim, cfg.max_objects
    batch = {
        "images": torch.randint(0, 256, (batch_size, window, M, image_size, image_size, 3), dtype=torch.uint8, generator=g),
        "actions": torch.rand((batch_size, window, N), generator=g) * 2 - 1,
        "step_mask": torch.ones(batch_size, window, dtype=torch.bool),
        "instruction": [f"put the block in bowl {i % 4}" for i in range(batch_size)],
        "episode": torch.arange(batch_size),
    }
    if cfg.state_tokens == "objects":  # boxes of 0.1 x 0.1 at random places, every slot filled
        corner = torch.rand((batch_size, window, M, K, 2), generator=g) * 0.9
        batch["object_boxes"] = torch.cat([corner, corner + 0.1, corner + 0.05], dim=-1)
        batch["object_valid"] = torch.ones(batch_size, window, M, K, dtype=torch.bool)
    return batch


def build_step(preset: str, attention: str, args: argparse.Namespace):
    """A closure running one training step (forward, backward, AdamW) of a fresh model."""
    model_cfg = standalone_config(preset)
    model_cfg.attention = attention
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Astra(model_cfg, unit_stats(model_cfg.action_space)).to(device)
    train_cfg = TrainConfig.from_dict({
        "data": {"root": "unused", "window": args.window}, "batch_size": args.batch_size,
        "cdl": {"alpha": args.cdl_alpha}, "device": args.device,
    })  # fmt: skip
    objective = AstraObjective(model, train_cfg)
    optimizer = build_optimizer(model, train_cfg)
    batch = _batch(model_cfg, args.batch_size, args.window, args.image_size, seed=0)
    use_bf16 = device.type == "cuda"
    model.train()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss, _ = objective(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_block(step, args: argparse.Namespace) -> float:
    """Samples/s over ``args.steps`` consecutive steps."""
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cdl-alpha", type=float, default=0.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    result: dict = {"preset": args.preset, "device": args.device, "batch_size": args.batch_size,
                    "window": args.window, "image_size": args.image_size, "cdl_alpha": args.cdl_alpha,
                    "threads": torch.get_num_threads()}  # fmt: skip
    steps = {attention: build_step(args.preset, attention, args) for attention in ("trajectory", "causal")}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    # Alternate the two variants block by block, so load changes on the machine hit both alike;
    # the overhead is the median of the per-pair ratios, which is robust to such drift.
    rates: dict[str, list[float]] = {"trajectory": [], "causal": []}
    ratios = []
    for _ in range(args.repeats):
        for attention, step in steps.items():
            rates[attention].append(time_block(step, args))
        ratios.append(rates["causal"][-1] / rates["trajectory"][-1])
    for attention, values in rates.items():
        result[f"{attention}_samples_per_s"] = round(statistics.median(values), 3)
    result["trajectory_overhead_pct"] = round(100.0 * (statistics.median(ratios) - 1.0), 2)
    result["overhead_pct_per_pair"] = [round(100.0 * (r - 1.0), 2) for r in ratios]
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
