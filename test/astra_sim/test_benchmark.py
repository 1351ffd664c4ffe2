"""The benchmark's statistics and tables on synthetic results (the runs themselves are real
trainings: see test_demo.py for the pipeline at toy size)."""

import numpy as np
import pytest

from astra_sim.benchmark import SUITES, aggregate, fisher_exact, markdown, paired_permutation


def fake_result(row, seed, successes_by_task, n=20):
    episodes = [{"task": task, "seed": 1_000_000 + i, "success": i < k}
                for task, k in successes_by_task.items() for i in range(n)]
    rate = sum(e["success"] for e in episodes) / len(episodes)
    return {"row": row, "seed": seed, "parameters": {"transformer": 1_000_000},
            "training": {"seconds": 10.0}, "evaluation": {"per_episode": episodes, "success_rate": rate},
            "curve": [(1, 1.0), (2, 0.5)]}


def test_rows_pool_over_seeds_with_wilson_intervals_and_significance():
    results = [fake_result("a", s, {"place": 19, "rotate": 18}) for s in (0, 1, 2)]
    results += [fake_result("b", s, {"place": 8, "rotate": 5}) for s in (0, 1, 2)]
    summary = aggregate(results, ["a", "b"])
    a, b = summary["rows"]["a"], summary["rows"]["b"]
    assert summary["reference"] == "a"
    assert a["overall"]["successes"] == 3 * 37 and a["overall"]["episodes"] == 120
    lo, hi = a["overall"]["ci95"]
    assert lo < a["overall"]["rate"] < hi <= 1.0
    assert b["vs_reference"]["difference"] < 0
    assert b["vs_reference"]["fisher_p"] < 1e-6 and b["vs_reference"]["paired_permutation_p"] < 1e-3
    table = markdown(summary, {"suite": "ablations", "command": "python -m astra_sim.benchmark", "git": {"commit": "x", "dirty": False},
                               "hardware": {"cpu": "cpu", "cores": 2}, "threads": 1, "steps": 2, "batch_size": 4,
                               "episodes": 8, "eval_per_task": 20})
    assert "| a | 3 |" in table and "reference" in table and "| b | 3 |" in table


def test_identical_rows_are_not_significant():
    results = [fake_result(r, 0, {"place": 10}) for r in ("a", "b")]
    summary = aggregate(results, ["a", "b"])
    assert summary["rows"]["b"]["vs_reference"]["fisher_p"] == pytest.approx(1.0)
    assert summary["rows"]["b"]["vs_reference"]["paired_permutation_p"] == 1.0


def test_statistics_match_their_definitions():
    # Fisher: 8/10 vs 2/10 -> p = 0.023 (two-sided, textbook value)
    assert fisher_exact(8, 10, 2, 10) == pytest.approx(0.0230, abs=1e-3)
    a = np.array([1] * 30 + [0] * 10, bool)
    b = a.copy()
    b[:12] = False  # 12 paired episodes flip to failure
    assert paired_permutation(a, b) < 0.001
    assert paired_permutation(a, a) == 1.0


def test_suites_name_the_papers_rows():
    assert list(SUITES["ablations"]) == ["astra+cdl", "astra", "causal attention", "autoregressive (no queries)",
                                         "gato-like (causal + autoregressive)"]
    assert list(SUITES["ladder"])[0] == "objects + pointer"


def test_resuming_with_another_budget_is_refused(tmp_path):
    import argparse
    import json

    from astra_sim.benchmark import run_one, slug

    result = fake_result("astra", 0, {"place": 19, "rotate": 18})
    result["training"]["steps"] = 600
    result["overrides"] = ["batch_size=32"]
    result["evaluation"]["episodes_by_task"] = {"place": 20, "rotate": 20}
    run_dir = tmp_path / "runs" / slug("astra") / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(result))
    args = argparse.Namespace(out=str(tmp_path), steps=600, batch_size=32, eval_per_task=20, threads=1)
    assert run_one("astra", [], 0, args, tmp_path / "data", set())["seed"] == 0  # same budget: reused, not rerun
    args.steps = 1000
    with pytest.raises(SystemExit, match=r"--steps 600 \(now 1000\)"):
        run_one("astra", [], 0, args, tmp_path / "data", set())


def test_other_simulators_need_a_task_and_get_their_own_config_and_folder():
    import argparse

    from astra_sim.benchmark import configure_env, default_out_name

    def args(suite, env, *options):
        return argparse.Namespace(suite=suite, env=env, env_option=list(options), image_size=None, cameras=None,
                                  train_config=None)

    mw = args("ablations", "metaworld", "task=reach", 'cameras=["corner"]')
    configure_env(mw)
    assert mw.env_options == {"task": "reach", "cameras": ["corner"]} and mw.tasks == {"reach": {}}
    assert mw.train_config.endswith("pose_objects.yaml") and default_out_name(mw) == "ablations_metaworld_reach"
    tabletop = args("ablations", "tabletop")
    configure_env(tabletop)
    assert tabletop.tasks is None and tabletop.env_options == {"image_size": 96, "action_bins": 64}
    assert tabletop.train_config.endswith("tabletop_objects.yaml") and default_out_name(tabletop) == "ablations_tabletop"
    with pytest.raises(ValueError, match="task="):
        configure_env(args("ablations", "maniskill"))
    with pytest.raises(ValueError, match="tabletop only"):
        configure_env(args("ladder", "maniskill", "task=PickCube-v1"))
