"""Every packaged gin config parses, and names resolve from any working directory."""

import logging
import os

import gin
import pytest

from wss import config, experiment

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "gin_configs")
CONFIGS = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".gin"))


# Configs included by others (model settings), and pretraining configs.
FRAGMENTS = {"demo_model.gin"}
PRETRAINING = sorted(f for f in CONFIGS if f.startswith("pretrain"))
TRAINING = sorted(set(CONFIGS) - FRAGMENTS - set(PRETRAINING))


@pytest.mark.parametrize("name", TRAINING)
def test_packaged_config_parses(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Names resolve against the package, not the cwd.
    experiment.parse_experiment_config(gin_files=[name], finalize=False)
    try:
        mode = gin.query_parameter("train.mode")
        assert mode in ("supervised", "semi", "weak", "self_training")
        if mode == "self_training":  # The teacher is the user's to bind: no default path.
            assert gin.query_parameter("train.teacher_checkpoint") is None
            assert gin.query_parameter("self_training.threshold") == 0.5
        assert gin.query_parameter("train.num_classes") == gin.query_parameter(
            "build_models.num_classes")
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name", PRETRAINING)
def test_pretraining_config_parses(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment.parse_experiment_config(gin_files=[name], finalize=False)
    try:
        assert gin.query_parameter("pretrain.loss") in ("sigmoid", "softmax")
        assert gin.query_parameter("pretrain.num_classes") > 1
    finally:
        gin.clear_config()


def test_includes_parse_without_error_lines(tmp_path, monkeypatch, caplog):
    # Gin probes `include 'base.gin'` as a Python package path first and logs an ERROR when it
    # is not one; the include then resolves on the search path, so nothing is wrong.
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    experiment.parse_experiment_config(gin_files=["demo.gin"], finalize=False)
    gin.clear_config()
    assert "Path not found" not in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # The filter is gone afterwards: other ERROR lines of the module still print.
    logging.getLogger().error("Path not found: after parsing")
    assert "Path not found: after parsing" in caplog.text


def test_a_missing_include_still_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.gin").write_text("include 'no_such_fragment.gin'\n")
    with pytest.raises(Exception, match="no_such_fragment.gin"):
        config.parse_gin([str(tmp_path / "broken.gin")], finalize=False)
    gin.clear_config()


def test_expected_configs_ship():
    assert {"base.gin", "voc_semi.gin", "voc_weak.gin", "voc_supervised.gin", "coco_semi.gin",
            "coco_weak.gin", "cityscapes_semi.gin", "voc_full_extra.gin", "demo.gin",
            "demo_supervised.gin", "demo_self_training.gin", "voc_self_training.gin"
            } <= set(CONFIGS)


def test_unknown_gin_file_names_the_flag():
    with pytest.raises(FileNotFoundError, match="--gin_file=nope.gin.*voc_semi.gin"):
        config.resolve_gin_file("nope.gin")


def test_unknown_binding_names_the_binding():
    try:
        with pytest.raises(ValueError, match="--gin_bindings='train.bogus = 3'"):
            experiment.parse_experiment_config(
                gin_files=["demo.gin"], gin_bindings=["train.bogus = 3"], finalize=False)
    finally:
        gin.clear_config()
