"""The provenance a result records: the git revision names exactly the files that were changed,
and the command can be run again."""

import shlex
import subprocess

import astra_sim.train_tabletop as train_tabletop


def test_uncommitted_files_are_named_exactly(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "astra_sim").mkdir()
    (tmp_path / "astra_sim" / "benchmark.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(train_tabletop, "REPO_ROOT", tmp_path)
    assert train_tabletop.git_revision()["dirty"] is False
    (tmp_path / "astra_sim" / "benchmark.py").write_text("x = 2\n")  # " M astra_sim/benchmark.py"
    revision = train_tabletop.git_revision()
    assert revision["dirty"] is True and revision["uncommitted"] == ["astra_sim/benchmark.py"]
    assert len(revision["commit"]) == 40


def test_the_recorded_command_pastes_back_into_a_shell():
    # Row names have spaces and brackets, env options carry JSON: joined with plain spaces the
    # command in results.md could not be run again.
    argv = ["--rows", "gato-like (causal + autoregressive)", "--env-option", 'cameras=["corner"]']
    command = train_tabletop.command_line("astra_sim.benchmark", argv)
    assert shlex.split(command) == ["python", "-m", "astra_sim.benchmark", *argv]
