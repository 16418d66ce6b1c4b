"""Tiny training runs for the tests: a 40 x 40 synthetic set and the demo configs shrunk to
seconds on the CPU.

Two shapes of run are shared by the test modules:

* `tiny_bindings` / `configure`: `demo.gin` in any mode as the paper's one-stage loop (no
  teacher stage; the model being trained makes the fused soft labels), on two logical CPUs;
* `tiny_demo_bindings` / `configure_demo`: any demo config as it is (its teacher and label
  bindings kept) on one CPU.
"""

from wss import experiment
from wss.data import synthetic

# What makes a demo config a run of seconds: tiny crops, batches and widths, no pretraining.
_SHRINK = (
    "train.init_checkpoint = None",  # Tests never pretrain.
    "train.crop_size = (33, 33)",
    "train.labelled_batch_size = 2",
    "train.unlabelled_batch_size = 2",
    "train.log_every = 1",
    "train.summary_every = 1",
    "train.checkpoint_every = 2",
    "build_deeplab.width_multiplier = 0.0625",
    "build_deeplab.middle_flow_units = 1",
    "make_sgc_head.attention_dim = 8",
    "evaluate_checkpoint.class_names = None",
)

# demo.gin's semi mode as the paper's one-stage loop, without its supervised teacher stage
# (tests/test_teacher_stage.py covers that) or offline labels (tests/test_offline_labels.py).
PAPER_LOOP = (
    "train.teacher_checkpoint = None",
    "train.ema_teacher_decay = 0.0",
    "train.offline_pseudo_labels = False",
    "train.share_as_teacher = False",
    "PseudoSegObjective.teacher_mirror = False",
    "PseudoLabelConfig.source = 'fusion'",
    "PseudoLabelConfig.soft = True",
)


def generate_tiny_set(tmp_path_factory, seed=3, num_val=4):
    """A 64-image synthetic dataset at 40 x 40 (the 1/16 split: 4 labelled, 60 unlabelled).

    Args:
      tmp_path_factory: pytest's factory (module-scoped fixtures call this).
      seed: the generator's seed.
      num_val: validation images.

    Returns:
      The dataset's directory.
    """
    directory = str(tmp_path_factory.mktemp("data") / "synthetic")
    synthetic.generate(directory, seed=seed, num_train=64, num_val=num_val, height=40, width=40)
    return directory


def tiny_bindings(data_dir, mode="semi", steps=3, extra=()):
    """Bindings that shrink `demo.gin` to a seconds-long run of the paper's loop on 2 CPUs."""
    return [f"DATA_DIR = '{data_dir}'", *_SHRINK,
            f"train.mode = '{mode}'",
            f"train.num_steps = {steps}",
            "train.image_summary_every = 2",
            "StrongViewConfig.cutout_size = 8",
            "make_strategy.devices = ['/cpu:0', '/cpu:1']",
            *PAPER_LOOP, *extra]


def configure(data_dir, **kwargs):
    """Parses `demo.gin` with `tiny_bindings(data_dir, **kwargs)` (not finalised)."""
    experiment.parse_experiment_config(
        gin_files=["demo.gin"], gin_bindings=tiny_bindings(data_dir, **kwargs), finalize=False)


def tiny_demo_bindings(data_dir, steps, extra=()):
    """Bindings that shrink a demo config as it is (its teacher bindings kept) on one CPU."""
    return [f"DATA_DIR = '{data_dir}'", *_SHRINK,
            f"train.num_steps = {steps}",
            "train.image_summary_every = 1",  # Every step: one traced step function.
            "train.seed = 0",
            "build_image_classifier.width_multiplier = 0.0625",
            "build_image_classifier.middle_flow_units = 1",
            "make_strategy.devices = ['/cpu:0']",
            "after_training.export = False",
            # One round of offline labels, `steps` long (tests of rounds bind their own).
            "offline_pseudo_labels.rounds = 1",
            "offline_pseudo_labels.step_shares = None",
            "offline_pseudo_labels.continue_rounds = False",
            *extra]


def configure_demo(gin_file, data_dir, steps, extra=()):
    """Parses `gin_file` with `tiny_demo_bindings(data_dir, steps, extra)` (not finalised)."""
    experiment.parse_experiment_config(
        gin_files=[gin_file], gin_bindings=tiny_demo_bindings(data_dir, steps, extra),
        finalize=False)
