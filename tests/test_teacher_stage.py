"""The supervised teacher stage of demo.gin (`wss.method.teacher_stage`): its cache key, a
supervised run sharing its checkpoint, and the stage training the teacher in a subprocess."""

import functools
import os
import subprocess

import gin
import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import generate_tiny_set, tiny_bindings

from wss import experiment
from wss.method import teacher_stage
from wss.training import trainer

# The online frozen teacher (demo.gin's offline labels are tests/test_offline_labels.py's).
STAGE = ["train.teacher_checkpoint = @supervised_teacher", "train.ema_teacher_decay = 1.0",
         "train.offline_pseudo_labels = False", "make_strategy.devices = None",
         "after_training.export = False", "after_training.evaluate = False"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_tiny_set(tmp_path_factory)


def _config_text(gin_file, bindings):
    gin.clear_config()
    experiment.parse_experiment_config(gin_files=[gin_file], gin_bindings=bindings,
                                       finalize=False)
    text = gin.config_str()
    gin.clear_config()
    return text


def test_a_semi_run_and_its_supervised_run_name_one_teacher():
    data = ["DATA_DIR = '/data/set'"]
    name = teacher_stage.teacher_cache_name(_config_text("demo.gin", data), ["records"])
    # The supervised baseline of the same bindings, and bindings a supervised run never reads.
    for gin_file, extra in [
            ("demo_supervised.gin", []),
            ("demo.gin", ["PseudoLabelConfig.source = 'sgc'", "train.log_every = 7",
                          "after_training.export = False", "train.unlabelled_batch_size = 3",
                          "unlabelled_split/join_path.name = 'other.txt'",
                          "evaluate_checkpoint.class_names = None",
                          "PseudoSegObjective.teacher_mirror = True",
                          "StrongViewConfig.cutmix_area = 0.5"])]:
        text = _config_text(gin_file, data + extra)
        assert teacher_stage.teacher_cache_name(text, ["records"]) == name, (gin_file, extra)
    # What the teacher's weights depend on.
    for extra in ["train.seed = 1", "labelled_split/join_path.name = 'train.txt'",
                  "build_deeplab.width_multiplier = 0.5", "train.num_steps = 10",
                  "NUM_CLASSES = 9"]:
        text = _config_text("demo.gin", data + [extra])
        assert teacher_stage.teacher_cache_name(text, ["records"]) != name, extra
    other_data = _config_text("demo.gin", ["DATA_DIR = '/data/other'"])
    assert teacher_stage.teacher_cache_name(other_data, ["records"]) != name
    assert teacher_stage.teacher_cache_name(_config_text("demo.gin", data), ["new"]) != name


def test_the_teacher_s_own_steps_name_the_supervised_run_of_that_many_steps():
    """`supervised_teacher.num_steps` trains the teacher for its own steps: its key is that of
    the supervised run of that many steps, not of the run's own."""
    data = ["DATA_DIR = '/data/set'"]
    own = teacher_stage.teacher_overrides(1000)
    assert own[-1] == "train.num_steps = 1000"
    assert teacher_stage.teacher_overrides(None) == teacher_stage.TEACHER_OVERRIDES
    demo = _config_text("demo.gin", data + ["supervised_teacher.num_steps = 1000"])
    name = teacher_stage.teacher_cache_name(demo, ["records"], own)
    shorter = _config_text("demo_supervised.gin", data + ["train.num_steps = 1000"])
    assert teacher_stage.teacher_cache_name(shorter, ["records"]) == name
    # The run's own steps (the supervised baseline of the same bindings) are another teacher.
    baseline = _config_text("demo_supervised.gin", data)
    assert teacher_stage.teacher_cache_name(baseline, ["records"]) != name
    assert teacher_stage.teacher_cache_name(
        _config_text("demo.gin", data), ["records"]) == teacher_stage.teacher_cache_name(
            baseline, ["records"])
    for bad in (0, 2.5, "1000"):
        with pytest.raises(ValueError, match="supervised_teacher.num_steps"):
            teacher_stage.teacher_overrides(bad)


def test_the_stage_trains_the_teacher_for_its_own_steps(tmp_path, monkeypatch, capsys):
    """The stage's subprocess is told the teacher's steps, after the run's own bindings."""
    commands = []

    def fake_run(command, check):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(teacher_stage.subprocess, "run", fake_run)
    gin.clear_config()
    experiment.parse_experiment_config(gin_files=["demo.gin"],
                                       gin_bindings=["DATA_DIR = '/data/set'"],
                                       finalize=False)
    teacher_stage.supervised_teacher(str(tmp_path / "none-*.tfrecord"), None,
                                     cache_dir=str(tmp_path / "cache"), num_steps=7)
    gin.clear_config()
    (command,) = commands
    assert command[-1] == "--gin_bindings=train.num_steps = 7"
    assert "'supervised' for 7 steps once" in capsys.readouterr().out


def test_the_data_fingerprint_sees_records_and_split_rewritten(tmp_path):
    records = tmp_path / "train-0.tfrecord"
    split = tmp_path / "labelled.txt"
    records.write_bytes(b"x" * 10)
    split.write_text("a\nb\n")
    pattern = str(tmp_path / "train-*.tfrecord")
    first = teacher_stage.data_fingerprint(pattern, str(split))
    assert teacher_stage.data_fingerprint(pattern, str(split)) == first
    split.write_text("a\nc\n")
    assert teacher_stage.data_fingerprint(pattern, str(split)) != first
    second = teacher_stage.data_fingerprint(pattern, str(split))
    records.write_bytes(b"y" * 11)
    assert teacher_stage.data_fingerprint(pattern, str(split)) != second


def test_the_init_fingerprint_sees_the_pretraining_and_the_checkpoint_rewritten(
        tmp_path, monkeypatch):
    """A changed pretraining config or rewritten warm-start files name a new teacher; asking
    the cached pretraining for its name runs nothing."""
    monkeypatch.setattr(experiment.subprocess, "run", _no_subprocess)
    monkeypatch.setenv("WSS_CACHE_DIR", str(tmp_path / "cache"))
    config = tmp_path / "pretrain.gin"
    config.write_text("pretrain.num_steps = 10\n")
    pretraining = functools.partial(experiment.pretrained_checkpoint, gin_file=str(config))
    first = teacher_stage.init_fingerprint(pretraining)
    assert first == [f"init: {experiment.pretraining_cache_name(str(config))}"]
    config.write_text("# a comment changes no weights\npretrain.num_steps = 10\n")
    assert teacher_stage.init_fingerprint(pretraining) == first
    config.write_text("pretrain.num_steps = 20\n")
    assert teacher_stage.init_fingerprint(pretraining) != first
    assert not (tmp_path / "cache").exists()  # Nothing built, nothing read.

    prefix = tmp_path / "model.ckpt"
    (tmp_path / "model.ckpt.index").write_bytes(b"i" * 5)
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"d" * 7)
    weights = teacher_stage.init_fingerprint(str(prefix))
    assert teacher_stage.init_fingerprint(str(prefix)) == weights
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"e" * 8)
    assert teacher_stage.init_fingerprint(str(prefix)) != weights

    def my_checkpoint():
        return str(prefix)

    assert teacher_stage.init_fingerprint(None) == ["init: none"]
    assert teacher_stage.init_fingerprint(my_checkpoint) != teacher_stage.init_fingerprint(None)
    assert "my_checkpoint" in teacher_stage.init_fingerprint(my_checkpoint)[0]


def test_train_hands_its_warm_start_to_the_teacher_stage(tiny_data, tmp_path):
    """`train` calls a teacher stage with `train.init_checkpoint`, before any warm start."""
    seen = {}

    class Stop(Exception):
        pass

    def stage(labelled_pattern, labelled_split, init_checkpoint=None):
        seen["args"] = (labelled_pattern, labelled_split, init_checkpoint)
        raise Stop

    def warm_start():
        raise AssertionError("the warm start ran before the teacher stage")

    experiment.parse_experiment_config(
        gin_files=["demo.gin"], gin_bindings=tiny_bindings(tiny_data, steps=2)
        + ["make_strategy.devices = None"], finalize=False)
    with pytest.raises(Stop):
        trainer.train(str(tmp_path / "semi"), teacher_checkpoint=stage,
                      ema_teacher_decay=1.0, offline_pseudo_labels=False,
                      init_checkpoint=warm_start)
    assert seen["args"][0] == os.path.join(tiny_data, "train-*.tfrecord")
    assert seen["args"][2] is warm_start


def _assert_teacher_is(student_dir, teacher_dir):
    """The student's frozen teacher (in its checkpoint) has the teacher run's weights."""
    supervised = experiment.build_models()
    experiment.restore_models(teacher_dir, *supervised)
    teacher = experiment.build_models()
    tf.train.Checkpoint(ema_teacher_model=experiment.VariableStore(teacher[0]),
                        ema_teacher_sgc_head=experiment.VariableStore(teacher[1])).restore(
        tf.train.latest_checkpoint(student_dir)).expect_partial()
    for part in (0, 1):
        for s_var, t_var in zip(supervised[part].variables, teacher[part].variables):
            if np.issubdtype(s_var.numpy().dtype, np.floating):
                np.testing.assert_array_equal(t_var.numpy(), s_var.numpy(), err_msg=s_var.path)


def test_a_shared_supervised_run_is_the_stage_s_teacher(tiny_data, tmp_path, monkeypatch,
                                                        capsys):
    """demo_supervised.gin's run, shared, is the teacher of demo.gin's run with the same
    bindings: no training in the stage, and the student's frozen teacher has its weights."""
    monkeypatch.setenv("WSS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(teacher_stage.subprocess, "run", _no_subprocess)
    common = tiny_bindings(tiny_data, steps=2)[1:]  # All but the data directory, given here.
    data = [f"DATA_DIR = '{tiny_data}'"]
    experiment.parse_experiment_config(
        gin_files=["demo_supervised.gin"],
        gin_bindings=data + common + ["train.mode = 'supervised'",
                                      "train.share_as_teacher = True",
                                      "make_strategy.devices = None"], finalize=False)
    trainer.train(str(tmp_path / "supervised"))
    assert "Cached as the supervised teacher" in capsys.readouterr().out
    gin.clear_config()
    experiment.parse_experiment_config(gin_files=["demo.gin"],
                                       gin_bindings=data + common + STAGE, finalize=False)
    trainer.train(str(tmp_path / "semi"))
    out = capsys.readouterr().out
    assert "Supervised teacher from the cache" in out and str(tmp_path / "supervised") in out
    _assert_teacher_is(str(tmp_path / "semi"), str(tmp_path / "supervised"))


def _no_subprocess(command, check):
    raise AssertionError(f"unexpected subprocess: {command}")


@pytest.mark.slow
def test_the_stage_trains_the_teacher_once_in_a_subprocess(tiny_data, tmp_path, monkeypatch,
                                                           capsys):
    """An empty cache: the stage trains the run's config in supervised mode (a `wss.train`
    subprocess), caches it, and the next run with the same bindings reuses it."""
    monkeypatch.setenv("WSS_CACHE_DIR", str(tmp_path / "cache"))
    bindings = tiny_bindings(tiny_data, steps=2) + STAGE
    experiment.parse_experiment_config(gin_files=["demo.gin"], gin_bindings=bindings,
                                       finalize=False)
    trainer.train(str(tmp_path / "first"))
    out = capsys.readouterr().out
    assert "Supervised teacher, cached" in out
    entries = [name for name in os.listdir(tmp_path / "cache") if name.startswith("teacher_")
               and not name.endswith(".lock")]
    assert len(entries) == 1
    entry = str(tmp_path / "cache" / entries[0])
    with open(os.path.join(entry, experiment.CONFIG_FILENAME)) as f:
        assert "train.mode = 'supervised'" in f.read()
    _assert_teacher_is(str(tmp_path / "first"), entry)
    gin.clear_config()
    monkeypatch.setattr(teacher_stage.subprocess, "run", _no_subprocess)
    experiment.parse_experiment_config(gin_files=["demo.gin"], gin_bindings=bindings,
                                       finalize=False)
    trainer.train(str(tmp_path / "second"))
    assert "Supervised teacher from the cache" in capsys.readouterr().out
    _assert_teacher_is(str(tmp_path / "second"), entry)
