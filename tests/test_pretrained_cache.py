"""The cached pretraining behind `@pretrained_checkpoint()`: what names an entry, and reuse."""

import os
import subprocess

import pytest

from wss import experiment
from wss.data import synthetic_classification


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
