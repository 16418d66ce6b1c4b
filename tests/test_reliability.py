"""Reliability promises (docs/reliability.md): one writer, atomic files, resume, named errors.

Each test reproduces one probe of issue 15 at toy size and checks that it now ends in correct
behaviour or in an error that names the culprit (file, flag or gin binding).
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import generate_tiny_set, tiny_bindings

from wss import config, evaluate, experiment, export, predict
from wss.data import records
from wss.tasks import pretraining
from wss.training import checkpointing, loop, rundir, trainer
from wss.training import strategy as strategy_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_tiny_set(tmp_path_factory)


def bindings(data_dir, steps=2, extra=()):
    """demo.gin shrunk to a supervised run of seconds on one CPU, without evaluation."""
    return tiny_bindings(data_dir, mode="supervised", steps=steps, extra=[
        "train.image_summary_every = 0", "make_strategy.devices = ['/cpu:0']",
        "after_training.evaluate = False", *extra])


def configure(data_dir, **kwargs):
    experiment.parse_experiment_config(gin_files=["demo.gin"],
                                       gin_bindings=bindings(data_dir, **kwargs), finalize=False)


# ------------------------------------------------------------------ one writer per logdir


def _hold_lock(directory, use_flock=True):
    """A subprocess that takes the directory's lock (heartbeat 0.05 s) and sleeps."""
    script = ("import sys, time\nfrom wss.training import rundir\n"
              "rundir.LogdirLock(sys.argv[1], heartbeat_secs=0.05, use_flock=sys.argv[2] == '1')"
              ".acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(directory),
                               "1" if use_flock else "0"], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_second_trainer_fails_at_once_naming_the_holder(tiny_data, tmp_path):
    configure(tiny_data)
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(rundir.LogdirLockedError, match=rf"in use.*pid {holder.pid} on host"):
            trainer.train(str(tmp_path))
    finally:
        _kill(holder)
    assert not glob.glob(str(tmp_path / "ckpt-*")) and not os.path.exists(tmp_path / "train")
    # Within one process the lock is re-entrant (wss.train holds it through export).
    with rundir.LogdirLock(str(tmp_path)):
        with rundir.LogdirLock(str(tmp_path)):
            pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(rundir.LogdirLockedError, match=f"pid {holder.pid} on host"):
            rundir.LogdirLock(str(tmp_path)).acquire()
    finally:
        _kill(holder)
    with rundir.LogdirLock(str(tmp_path)):  # The kernel released the dead holder's lock.
        pass


def test_ownership_file_lock_for_remote_directories(tmp_path):
    holder = _hold_lock(tmp_path, use_flock=False)
    try:
        time.sleep(0.3)  # Heartbeats keep it fresh.
        with pytest.raises(rundir.LogdirLockedError, match=f"pid {holder.pid}"):
            rundir.LogdirLock(str(tmp_path), stale_secs=0.25, use_flock=False).acquire()
    finally:
        _kill(holder)
    time.sleep(0.3)  # No heartbeat since the kill: stale.
    lock = rundir.LogdirLock(str(tmp_path), heartbeat_secs=0.05, stale_secs=0.25,
                             use_flock=False).acquire()
    lock.release()
    assert not os.path.exists(lock.path)


# ------------------------------------------------------------------ files and temporaries


def test_run_file_keeps_its_old_content_when_the_disk_fills(tmp_path):
    """A write that fails at 8 KiB (RLIMIT_FSIZE, as a full disk) leaves the old config."""
    path = tmp_path / loop.CONFIG_FILENAME
    path.write_text("old = 1\n")
    script = (
        "import resource, signal, sys\n"
        "from wss.training import loop\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
        "try:\n"
        "    loop._write_text(sys.argv[1], 'x = 2\\n' * 5000)\n"
        "except Exception as e:\n"
        "    print('failed:', type(e).__name__)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(path)], env=ENV,
                               capture_output=True, text=True, timeout=120)
    assert "failed:" in completed.stdout, completed.stderr[-2000:]
    assert path.read_text() == "old = 1\n"
    assert os.listdir(tmp_path) == [loop.CONFIG_FILENAME]  # No temporary left either.


def test_checkpoints_of_a_relative_log_directory_resolve(tmp_path, monkeypatch):
    # The quick start's default --logdir (runs/NAME) is relative.
    monkeypatch.chdir(tmp_path)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), "run",
                                         max_to_keep=3)
    manager.save(checkpoint_number=1)
    manager.save(checkpoint_number=3)
    assert checkpointing.listed_checkpoints("run") == [os.path.join("run", "ckpt-3"),
                                                       os.path.join("run", "ckpt-1")]
    assert checkpointing.newest_intact_checkpoint("run") == os.path.join("run", "ckpt-3")


def test_stale_temporaries_are_removed_but_nothing_else(tmp_path):
    names = ["ckpt-7_temp", "checkpoint.tmp0123abcd", "config.gin.wss-tmp-0a1b2c3d4e5f"]
    (tmp_path / names[0]).mkdir()
    (tmp_path / names[0] / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 100)
    for name in names[1:] + ["ckpt-6.index", "config.gin", "ckpt-6.eval.json"]:
        (tmp_path / name).write_text("x")
    assert rundir.remove_stale_temporaries(str(tmp_path)) == sorted(names)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-6.eval.json", "ckpt-6.index", "config.gin"]


@pytest.mark.slow
def test_sigterm_exits_with_the_preemption_code_after_cleaning_temporaries(tiny_data,
                                                                           tmp_path):
    logdir = tmp_path / "run"
    (logdir / "ckpt-9_temp").mkdir(parents=True)
    (logdir / "checkpoint.tmp00ff").write_text("partial")
    command = [sys.executable, "-m", "wss.train", "--gin_file=demo.gin", f"--logdir={logdir}"]
    command += [f"--gin_bindings={b}" for b in bindings(tiny_data, steps=1000, extra=[
        "train.checkpoint_every = 1000"])]
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("step 3/"):
                process.send_signal(signal.SIGTERM)
                break
        output = "".join(lines) + process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == loop.PREEMPTED_EXIT_CODE, output[-3000:]
    assert "Stopped by SIGTERM" in output
    assert "Removed temporaries" in output
    assert not (logdir / "ckpt-9_temp").exists() and not (logdir / "checkpoint.tmp00ff").exists()
    assert tf.train.latest_checkpoint(str(logdir)) is not None


# ------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_names_a_foreign_one(
        tiny_data, tmp_path, capsys):
    logdir = str(tmp_path)
    configure(tiny_data, steps=4)
    trainer.train(logdir)
    data_file = glob.glob(os.path.join(logdir, "ckpt-4.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    # Tools that read the directory fall back too (without moving anything).
    assert experiment.latest_checkpoint_path(logdir).endswith("ckpt-2")
    gin.clear_config()
    configure(tiny_data, steps=6)
    result = trainer.train(logdir)
    out = capsys.readouterr().out
    assert "ckpt-4 is truncated or corrupt" in out and "Falling back" in out
    assert f"Resumed from {os.path.join(logdir, 'ckpt-2')}" in out
    assert result["step"] == 6
    assert os.path.exists(os.path.join(logdir, checkpointing.CORRUPT_DIRNAME, "ckpt-4.index"))
    assert [os.path.basename(p) for p in checkpointing.listed_checkpoints(logdir)][:2] == [
        "ckpt-6", "ckpt-4"]
    with open(os.path.join(logdir, "checkpoint")) as f:
        assert logdir not in f.read()  # Relative paths, as CheckpointManager writes them.
    checkpointing.verify_checkpoint(os.path.join(logdir, "ckpt-4"))  # Rewritten by the rerun.

    gin.clear_config()
    configure(tiny_data, steps=8, extra=["build_deeplab.middle_flow_units = 2"])
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r"ckpt-6 does not fit this model: .*another configuration"):
        trainer.train(logdir)


# ------------------------------------------------------------------ configuration values


@pytest.mark.parametrize("binding, culprit", [
    ("train.num_steps = 'ten'", "train.num_steps='ten'"),
    ("train.num_steps = 0", "train.num_steps=0"),
    ("train.checkpoint_every = 0", "train.checkpoint_every=0"),
    ("train.labelled_batch_size = 0", "train.labelled_batch_size=0"),
    ("train.crop_size = (1, 1)", r"train.crop_size=\(1, 1\)"),
    ("make_optimizer.base_learning_rate = -0.05", "make_optimizer.base_learning_rate=-0.05"),
])
def test_bad_values_fail_naming_the_binding(tiny_data, tmp_path, binding, culprit):
    configure(tiny_data, extra=[binding])
    with pytest.raises(ValueError, match=f"^{culprit}: expected"):
        trainer.train(str(tmp_path))
    assert not glob.glob(str(tmp_path / "ckpt-*"))


def test_misspelt_macro_fails_naming_it():
    with pytest.raises(ValueError, match="--gin_bindings='NUM_CLASES = 5': macro NUM_CLASES "
                                         ".*did you mean NUM_CLASSES"):
        experiment.parse_experiment_config(gin_files=["demo.gin"],
                                           gin_bindings=["NUM_CLASES = 5"], finalize=False)


def test_saved_config_with_an_overridden_macro_still_parses(tmp_path):
    # voc_full_extra.gin overrides the only reader of voc_semi.gin's LABELLED_SPLIT.
    experiment.parse_experiment_config(gin_files=["voc_full_extra.gin"], finalize=False)
    (tmp_path / loop.CONFIG_FILENAME).write_text(gin.config_str())
    gin.clear_config()
    experiment.parse_experiment_config(str(tmp_path), finalize=False)
    assert gin.query_parameter("train.num_steps") == 90000


def test_a_dumped_config_with_an_overridden_macro_parses_as_a_gin_file(tmp_path):
    # The teacher stage and the earlier rounds of the offline labels train from such a file;
    # overriding both readers of demo_model.gin's DEMO_MIDDLE_FLOW_UNITS leaves it unread.
    bindings = ["build_deeplab.middle_flow_units = 1",
                "build_image_classifier.middle_flow_units = 1", "train.num_steps = 7"]
    experiment.parse_experiment_config(gin_files=["demo.gin"], gin_bindings=bindings,
                                       finalize=False)
    path = str(tmp_path / "dumped.gin")
    config.dump_config(path)
    (tmp_path / "plain.gin").write_text(gin.config_str())
    gin.clear_config()
    with pytest.raises(ValueError, match="is set but nothing reads"):
        experiment.parse_experiment_config(gin_files=[str(tmp_path / "plain.gin")],
                                           finalize=False)
    gin.clear_config()
    experiment.parse_experiment_config(gin_files=[path], finalize=False)
    assert gin.query_parameter("train.num_steps") == 7
    assert gin.query_parameter("build_deeplab.middle_flow_units") == 1


def test_strategy_flags_are_validated_and_quoted():
    with pytest.raises(ValueError, match="--tpu='local' is only used with --strategy=tpu"):
        strategy_lib.flag_bindings(None, "local")
    with pytest.raises(ValueError, match="--tpu="):
        strategy_lib.flag_bindings("tpu", "x' + __import__('os').getcwd() + '")
    address = "grpc://10.0.0.2:8470"
    parsed = strategy_lib.flag_bindings("tpu", address)
    experiment.import_configurables()
    gin.parse_config(parsed)
    assert gin.query_parameter("make_strategy.tpu") == address
    assert gin.query_parameter("make_strategy.name") == "tpu"


@pytest.mark.parametrize("remote_dir", ["wss ~", "/", "..", "a/../b", "$(id)"])
def test_tpu_launcher_refuses_unsafe_remote_dirs(remote_dir):
    env = dict(ENV, DRY_RUN="1", TPU_NAME="t", ZONE="z", REMOTE_DIR=remote_dir)
    completed = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"), "setup"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "REMOTE_DIR=" in completed.stderr
    assert "rm -rf" not in completed.stdout


def test_tpu_launcher_quotes_the_remote_dir():
    env = dict(ENV, DRY_RUN="1", TPU_NAME="t", ZONE="z", REMOTE_DIR="runs/wss.v2")
    completed = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"), "setup"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "rm -rf -- runs/wss.v2 &&" in completed.stdout


# ------------------------------------------------------------------ records and streams


def _copy_records(tiny_data, directory):
    os.makedirs(directory)
    for path in glob.glob(os.path.join(tiny_data, "train-*.tfrecord")):
        shutil.copy(path, directory)
    return sorted(glob.glob(os.path.join(directory, "train-*.tfrecord")))


def test_truncated_record_file_without_split_is_named(tiny_data, tmp_path):
    files = _copy_records(tiny_data, str(tmp_path / "records"))
    with open(files[1], "r+b") as f:
        f.truncate(os.path.getsize(files[1]) * 2 // 3)
    configure(tiny_data, extra=[f"train.labelled_pattern = '{tmp_path}/records/train-*'",
                                "train.labelled_split = None"])
    with pytest.raises(records.RecordError, match=f"{files[1]}: record \\d+ .*cannot be read"):
        trainer.train(str(tmp_path / "run"))


def test_truncated_record_file_met_during_pretraining_is_named(tiny_data, tmp_path):
    """The stream fails inside the traced step; the loop re-reads the files to name it."""
    files = _copy_records(tiny_data, str(tmp_path / "records"))
    with open(files[1], "r+b") as f:
        f.truncate(os.path.getsize(files[1]) * 2 // 3)
    experiment.import_configurables()
    gin.parse_config([
        f"pretrain.train_pattern = '{tmp_path}/records/train-*'", "pretrain.num_classes = 11",
        "pretrain.num_steps = 2", "pretrain.batch_size = 2", "pretrain.crop_size = (33, 33)",
        "pretrain.image_summary_every = 0", "build_image_classifier.width_multiplier = 0.0625",
        "build_image_classifier.middle_flow_units = 1", "make_strategy.devices = ['/cpu:0']"])
    with pytest.raises(records.RecordError,
                       match=f"images stream: {files[1]}: record \\d+ .*cannot be read"):
        pretraining.pretrain(str(tmp_path / "run"))


@pytest.mark.slow
def test_corrupt_png_inside_a_record_is_named(tiny_data, tmp_path):
    feature = {
        records.IMAGE_ENCODED: records._bytes_feature(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50),
        records.IMAGE_FILENAME: records._bytes_feature(b"broken_image"),
        records.IMAGE_FORMAT: records._bytes_feature(b"png"),
        records.MASK_ENCODED: records._bytes_feature(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    bad = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(bad) as writer:
        writer.write(example.SerializeToString())
    configure(tiny_data, extra=[f"train.labelled_pattern = '{bad}'",
                                "train.labelled_split = None"])
    with pytest.raises(records.RecordError, match=f"labelled stream: {bad}: record 0 .*PNG"):
        trainer.train(str(tmp_path / "run"))


def test_empty_stream_is_named_with_its_records_and_split(tiny_data, tmp_path):
    # Every train image labelled and the unlabelled stream = the same records minus those.
    configure(tiny_data, extra=["train.mode = 'semi'",
                                "labelled_split/join_path.name = 'train.txt'",
                                "train.unlabelled_split = None"])
    with pytest.raises(ValueError, match="the unlabelled stream is empty: .*records "
                                         ".*train-\\*.tfrecord, excluding .*train.txt"):
        trainer.train(str(tmp_path))


# ------------------------------------------------------------------ serving and predict


class _TinyModel(tf.Module):
    """Stands in for DeepLab: logits at stride 4 from a 1x1 projection."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.random.default_rng(0).normal(size=(3, 3)), dtype=tf.float32)

    def __call__(self, images, training=False):
        del training
        pooled = tf.nn.avg_pool2d(images / 255.0, 4, 4, "SAME")
        return {"logits": tf.einsum("bhwc,ck->bhwk", pooled, self.kernel)}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("export") / "model")
    export.export_saved_model(_TinyModel(), directory)
    return directory


def test_serving_signature_rejects_bad_shapes_without_aborting(saved_model, tmp_path):
    script = (
        "import json, sys, tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = {}\n"
        "for shape in [(96, 96, 3), (0, 96, 96, 3), (1, 0, 0, 3), (1, 40, 40, 1), (40,), (),\n"
        "              (2, 37, 29, 3)]:\n"
        "    try:\n"
        "        out[str(shape)] = list(serve(images=tf.zeros(shape, tf.uint8))['class_map']"
        ".shape)\n"
        "    except tf.errors.InvalidArgumentError as e:\n"
        "        out[str(shape)] = e.message\n"
        "print(json.dumps(out))\n"
    )
    env = dict(ENV, PYTHONPATH="")
    completed = subprocess.run([sys.executable, "-I", "-c", script, saved_model], env=env,
                               capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results.pop(str((2, 37, 29, 3))) == [2, 37, 29]
    for shape, message in results.items():
        assert "must be uint8 [batch, height, width, 3]" in message, (shape, message)


def test_export_refuses_a_leftover_temporary_directory(tmp_path):
    leftover = tmp_path / "model.tmp-export"
    leftover.mkdir()
    with pytest.raises(FileExistsError, match="model.tmp-export exists: an interrupted export"):
        export.export_saved_model(_TinyModel(), str(tmp_path / "model"))
    assert leftover.exists() and not (tmp_path / "model").exists()


def _png(path, height=20, width=30):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3)).astype(np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def test_predict_never_overwrites_inputs_and_names_outputs_uniquely(saved_model, tmp_path):
    _png(tmp_path / "a.png")
    tf.io.write_file(str(tmp_path / "a.jpg"), tf.io.encode_jpeg(
        np.zeros((20, 30, 3), np.uint8)))
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(ValueError, match="would overwrite the input .*a.png"):
        predict.predict_files(saved_model, [str(tmp_path / "a.png")], str(tmp_path))
    assert (tmp_path / "a.png").read_bytes() == before

    out = tmp_path / "out"
    written = predict.predict_files(
        saved_model, [str(tmp_path / "a.png"), str(tmp_path / "a.jpg")], str(out))
    names = [os.path.basename(p) for pair in written for p in pair]
    assert names == ["a_png.png", "a_png_overlay.png", "a_jpg.png", "a_jpg_overlay.png"]
    assert sorted(os.listdir(out)) == sorted(names)
    assert predict.output_names(["x/a.png", "y/a.png", "a_overlay.jpg", "b.png"]) == [
        "a_png", "a_png_1", "a_overlay", "b"]


def test_predict_refuses_images_over_the_pixel_limit(saved_model, tmp_path):
    _png(tmp_path / "big.png", 100, 120)
    with pytest.raises(ValueError, match="big.png is 100 x 120 = 12000 pixels, more than "
                                         "--max_pixels=5000"):
        predict.predict_files(saved_model, [str(tmp_path / "big.png")], str(tmp_path / "o"),
                              max_pixels=5000)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ continuous evaluation


def test_continuous_evaluation_skips_a_checkpoint_deleted_before_it_was_read(tmp_path, capsys):
    experiment.import_configurables()
    gin.parse_config(["evaluate_checkpoint.pattern = 'unused'",
                      "evaluate_checkpoint.num_classes = 3"])
    assert evaluate.evaluate_if_present(str(tmp_path / "ckpt-2")) is None
    assert "ckpt-2: skipped, the trainer deleted it" in capsys.readouterr().out


def test_check_helpers_name_the_binding():
    assert config.check_int("a.b", 3, minimum=1) == 3
    for bad in (True, 2.0, "3", None):
        with pytest.raises(ValueError, match="^a.b="):
            config.check_int("a.b", bad, minimum=1)
    with pytest.raises(ValueError, match=r"^a.b=nan: expected a number > 0"):
        config.check_number("a.b", float("nan"), minimum=0, exclusive_minimum=True)
    assert config.check_size("a.c", [33, 65], minimum=17) == (33, 65)


def test_rerun_agreement_finds_the_first_step_where_two_runs_part():
    from script_loading import load_script

    rerun = load_script("benchmarks/rerun_agreement.py")
    same = [{"step": 1, "loss_s": 0.5, "loss_sa": 1.0}, {"step": 2, "loss_s": 0.4, "loss_sa": 0.9}]
    assert rerun.first_parting(same, [dict(row) for row in same]) == (None, (), 0.0)
    parted = [dict(same[0]), {"step": 2, "loss_s": 0.4, "loss_sa": 0.9 + 2.0 ** -22}]
    first, names, largest = rerun.first_parting(same, parted)
    assert (first, names) == (2, ("loss_sa",)) and largest == np.float64(2.0 ** -22)
    with pytest.raises(ValueError, match="different steps"):
        rerun.first_parting(same, same[:1])
