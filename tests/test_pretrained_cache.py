"""The cached pretraining behind `@pretrained_checkpoint()`: what names an entry, and reuse."""

import os
import subprocess

import gin
import pytest

from wss import experiment
from wss.data import synthetic, synthetic_classification
from wss.training import loop, trainer


def _write_configs(directory, base_text="pretrain.num_steps = 10\n"):
    with open(os.path.join(directory, "base_part.gin"), "w") as f:
        f.write(base_text)
    path = os.path.join(directory, "my_pretrain.gin")
    with open(path, "w") as f:
        f.write("include 'base_part.gin'\npretrain.seed = 0\n")
    return path


def test_name_depends_on_every_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # The include is resolved from the working directory too.
    path = _write_configs(tmp_path)
    name = experiment.pretraining_cache_name(path)
    assert name.startswith("pretrained_my_pretrain_")
    assert experiment.pretraining_cache_name(path) == name
    with_binding = experiment.pretraining_cache_name(path, ["pretrain.seed = 1"])
    assert with_binding != name
    # A binding is read as a statement, like the files: its spacing says nothing new.
    assert experiment.pretraining_cache_name(path, ["pretrain.seed=1"]) == with_binding
    assert experiment.pretraining_cache_name(path, ["pretrain.seed = 2"]) != with_binding
    with pytest.raises(SyntaxError, match="--gin_bindings 'pretrain.seed = '"):
        experiment.pretraining_cache_name(path, ["pretrain.seed = "])
    _write_configs(tmp_path, base_text="pretrain.num_steps = 20\n")  # An included file.
    changed_include = experiment.pretraining_cache_name(path)
    assert changed_include != name
    # Comments, blank lines and spacing say nothing new: the entry stays.
    _write_configs(tmp_path, base_text="# Ten more steps.\n\npretrain.num_steps   =  20  # !\n")
    assert experiment.pretraining_cache_name(path) == changed_include
    # A new generator of the built-in classification set changes no config text, but the
    # images the backbone learns from.
    monkeypatch.setattr(synthetic_classification, "VERSION", synthetic_classification.VERSION + 1)
    assert experiment.pretraining_cache_name(path) != changed_include


def test_cached_entry_is_reused_and_a_missing_one_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _write_configs(tmp_path)
    commands = []

    def fake_run(command, check):
        del check
        commands.append(command)
        logdir = next(arg for arg in command if arg.startswith("--logdir="))[len("--logdir="):]
        os.makedirs(os.path.join(logdir, "tf1"))
        open(os.path.join(logdir, "tf1", "model.ckpt.index"), "w").close()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(experiment.subprocess, "run", fake_run)
    cache_dir = str(tmp_path / "cache")
    first = experiment.pretrained_checkpoint(path, ["pretrain.seed = 3"], cache_dir=cache_dir)
    name = experiment.pretraining_cache_name(path, ["pretrain.seed = 3"])
    assert first == os.path.join(cache_dir, name, "tf1", "model.ckpt")
    assert len(commands) == 1
    assert f"--gin_file={path}" in commands[0]
    assert "--gin_bindings=pretrain.seed = 3" in commands[0]
    # The pretraining ran (and printed its paths) in a temporary directory: the last word is
    # the checkpoint's cached path.
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"Pretrained checkpoint, cached: {first}"
    again = experiment.pretrained_checkpoint(path, ["pretrain.seed = 3"], cache_dir=cache_dir)
    assert again == first and len(commands) == 1  # Reused, not rerun.
    assert "Pretrain" not in capsys.readouterr().out


def test_failed_pretraining_leaves_no_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write_configs(tmp_path)
    monkeypatch.setattr(experiment.subprocess, "run",
                        lambda command, check: subprocess.CompletedProcess(command, 1))
    cache_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="pretraining failed"):
        experiment.pretrained_checkpoint(path, cache_dir=str(cache_dir))
    assert not (cache_dir / experiment.pretraining_cache_name(path)).exists()


def test_a_function_init_checkpoint_is_called_only_to_warm_start(monkeypatch):
    """`train.init_checkpoint = @pretrained_checkpoint`: pretrain when warm-starting, not on
    resume nor when the task starts from an earlier run."""
    calls = []

    def init_checkpoint():
        calls.append("called")
        return "/pretrained/tf1/model.ckpt"

    class FakeTask:
        warm_started_from = None
        earlier_run = None  # What `start_from_run` restores (a later round of offline labels).

        def start_from_run(self):
            return self.earlier_run

        def warm_start(self, path):
            self.warm_started_from = path
            return "loaded"

    task = FakeTask()
    loop._restore_or_warm_start(task, None, None, None, init_checkpoint, "logdir")
    assert calls == ["called"] and task.warm_started_from == "/pretrained/tf1/model.ckpt"

    restored = []
    monkeypatch.setattr(loop.checkpointing, "restore_checkpoint",
                        lambda checkpoint, path, config_hint: restored.append(path))
    monkeypatch.setattr(loop, "_step_of", lambda optimizer: 7)
    task = FakeTask()
    loop._restore_or_warm_start(task, None, "logdir/ckpt-7", None, init_checkpoint, "logdir")
    assert restored == ["logdir/ckpt-7"] and calls == ["called"]  # Not called again.
    assert task.warm_started_from is None

    # A task that starts from an earlier run's weights is not warm-started (nor pretrained).
    task = FakeTask()
    task.earlier_run = "logdir/round_1/ckpt-1000"
    loop._restore_or_warm_start(task, None, None, None, init_checkpoint, "logdir")
    assert task.warm_started_from is None and calls == ["called"]


def test_a_bad_init_checkpoint_binding_is_named():
    with pytest.raises(ValueError, match="train.init_checkpoint=3"):
        loop.check_options(loop.LoopOptions(init_checkpoint=3), "train")
    loop.check_options(loop.LoopOptions(init_checkpoint=lambda: "path"), "train")


def test_a_bad_split_fails_before_the_pretraining_runs(tmp_path, monkeypatch):
    """demo.gin on an empty cache with a split file that names no image: the split check
    fails first, without starting the pretraining it would warm-start from."""
    monkeypatch.setenv("WSS_CACHE_DIR", str(tmp_path / "empty_cache"))
    launched = []
    monkeypatch.setattr(experiment.subprocess, "run",
                        lambda command, check: launched.append(command))
    data_dir = str(tmp_path / "data")
    synthetic.generate(data_dir, seed=3, num_train=64, num_val=4, height=32, width=32)
    with open(os.path.join(data_dir, "typo.txt"), "w") as f:
        f.write("no_such_image\n")
    gin.clear_config()
    try:
        experiment.parse_experiment_config(gin_files=["demo.gin"], gin_bindings=[
            f"DATA_DIR = '{data_dir}'", "labelled_split/join_path.name = 'typo.txt'"],
            finalize=False)
        with pytest.raises(ValueError, match="typo.txt"):
            trainer.train(str(tmp_path / "run"))
    finally:
        gin.clear_config()
    assert not launched
