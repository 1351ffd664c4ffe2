"""Two CPU processes under torchrun (gloo): replicas stay identical, shards differ, loss goes down."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from astra_core.training.config import TrainConfig
    from astra_core.training.loop import Trainer

    cfg = TrainConfig.load(sys.argv[1], sys.argv[3:])
    trainer = Trainer(cfg)
    shard = trainer.batches.epoch(0)[0]
    first = trainer.train_step(next(trainer._loader(trainer.position)))
    trainer.fit()
    rank, world = dist.get_rank(), dist.get_world_size()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    shards = [torch.zeros(len(shard), dtype=torch.long) for _ in range(world)]
    dist.all_gather(shards, torch.tensor(shard))
    if rank == 0:
        json.dump({
            "world": world,
            "max_param_diff": max(float((g - gathered[0]).abs().max()) for g in gathered),
            "shards": [s.tolist() for s in shards],
            "history": [r["loss"] for r in trainer.history],
        }, open(sys.argv[2], "w"))
    trainer.close()
    """
)


def test_two_process_gloo_training(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=4, num_steps=8, cameras=("front",), image_size=16)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = tmp_path / "result.json"
    overrides = [
        f"data.root={root}", f"output_dir={tmp_path / 'run'}", "data.window=4", "data.val_fraction=0.25",
        "model.overrides.vision.image_size=16", "batch_size=4", "total_steps=40", "log_every=1", "val_every=20",
        "checkpoint_every=20", "cdl.num_negatives=2", "optim.lr=3e-3", "optim.warmup_steps=5", "device=cpu",
        "progress_bar=false",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(REPO / "config/train/tiny.yaml"), str(result), *overrides]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(result.read_text())
    assert out["world"] == 2
    assert out["max_param_diff"] == 0.0, "replicas diverged: gradients were not all-reduced"
    a, b = out["shards"]
    assert set(a).isdisjoint(b), "both ranks trained on the same windows"
    losses = out["history"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "val" for r in metrics)
    assert (tmp_path / "run" / "checkpoints" / "step_00000040" / "training_state").is_dir()
