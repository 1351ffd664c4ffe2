"""``python -m astra_core.train --config config/train/<preset>.yaml [key=value ...] [--resume [DIR]]``

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m astra_core.train --config ...`` (DDP; gloo
on CPU, nccl on GPU). ``--resume`` alone continues from the newest checkpoint in ``output_dir``;
``--resume DIR`` from a given ``checkpoints/step_*`` directory.
"""

from __future__ import annotations

import argparse
import json
import sys

from astra_core.threads import configure_threads
from astra_core.training.config import TrainConfig
from astra_core.training.loop import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train Astra (behavior cloning + contrastive dynamics learning).")
    parser.add_argument("--config", required=True, help="training YAML, e.g. config/train/tiny.yaml")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="DIR",
                        help="continue exactly where a run stopped (default: its newest checkpoint)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-4")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.load(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"error: {e}\n")
    configure_threads(cfg.threads, "astra_core.train")
    trainer = Trainer(cfg, resume=args.resume)
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    if trainer.is_main:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
