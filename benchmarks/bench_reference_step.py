"""Step time of the reference PseudoSeg TF1 training graphs (googleinterns/wss) on this machine.

    python benchmarks/bench_reference_step.py --reference_dir=/tmp/wss_ref \
        [--crop 129] [--batch 4] [--steps 5] [--warmup 2] [--modes supervised,pseudoseg]

`--reference_dir` is a checkout of github.com/googleinterns/wss (`train_sup.py`,
`train_wss.py`, `core/`, `third_party/`), for example
`git --git-dir=/work/.mirror/googleinterns+wss/repo archive HEAD | tar -x -C /tmp/wss_ref`.

The reference's own code builds the graphs: `train_sup.main` (supervised DeepLab) and
`train_wss.main` (PseudoSeg with unlabelled images, the README's flags: Xception-65, output
stride 16, ASPP rates 6/12/18, decoder stride 4, BatchNorm fine-tuned, soft pseudo labels at
T = 0.5, averaged self-attention Grad-CAM fusion, one clone) run unchanged in
`tf.compat.v1` graph mode with `tf_slim`, with three substitutions made from outside:

* `tensorflow.contrib` (TF 1.15) is mapped onto `tf_slim` (`slim`, `framework`, `layers`)
  and `tf.compat.v1` (what `import tensorflow as tf` meant in TF 1.15); `contrib.tfprof` is a
  no-op context;
* `core.data_generator.Dataset` is replaced by constant batches of the same keys, shapes and
  dtypes (random images in [0, 255], random labels, all-valid masks, class labels), held in
  local variables so that no input work or copying is timed and nothing is constant-folded;
* `slim.learning.train` is replaced by a function that keeps the train tensor, so the step
  timed is `session.run(train_op)`: forward, backward, the momentum update and the BatchNorm
  update ops of the clone, with the train scripts' summaries and metrics not run (as between
  their summary steps).

Weights are random (slim's initialisers); nothing is downloaded. This needs `tf_slim` and
`tf_keras` (`pip install tf_slim "tf_keras~=2.21.0"`), which are not dependencies of `wss`.
`benchmarks/bench_train_step.py --reference_dir=...` times these graphs next to the Keras steps
in one process; this script times them alone.
"""

import argparse
import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import statistics
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 21  # PASCAL VOC, as the reference's `pascal_voc_seg` dataset.
IGNORE_LABEL = 255
_REFERENCE_TOP_LEVEL = ("core", "third_party", "train_sup", "train_wss")
_LEGACY_LAYERS = ("", ".base", ".convolutional", ".core", ".normalization", ".pooling",
                  ".variable_scope_shim")


def _tf_slim():
    """Imports tf_slim, aliasing tf_keras' legacy layers where TensorFlow 2.21 looks for them."""
    try:
        import tf_keras  # noqa: F401
        import tf_slim
        import tf_slim.nets.resnet_utils  # noqa: F401
    except ImportError as error:
        raise SystemExit("The reference graphs need tf_slim and tf_keras: "
                         "pip install tf_slim 'tf_keras~=2.21.0'") from error
    for suffix in _LEGACY_LAYERS:
        name = "tf_keras.legacy_tf_layers" + suffix
        if name not in sys.modules:
            with contextlib.suppress(ImportError):
                sys.modules[name] = importlib.import_module("tf_keras.src.legacy_tf_layers"
                                                            + suffix)
    return tf_slim


class _Proxy(types.ModuleType):
    """A module that forwards attribute look-ups to `target` unless set on itself."""

    def __init__(self, name, target, **overrides):
        super().__init__(name)
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._target, name)


class _Capture:
    """Stands in for `slim.learning.train`: keeps the train tensor and its arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, train_op, **kwargs):
        self.calls.append((train_op, kwargs))


def _multiply_gradients(grads_and_vars, gradient_multipliers):
    """tf_slim 1.1's `learning.multiply_gradients`, which names `ops.Tensor` (gone in TF 2.21)."""
    multiplied = []
    for grad, var in grads_and_vars:
        key = var if var in gradient_multipliers else var.op.name
        if key in gradient_multipliers:
            multiplier = gradient_multipliers[key]
            if not isinstance(multiplier, tf.Tensor):
                multiplier = tf.constant(multiplier, dtype=grad.dtype)
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.IndexedSlices(grad.values * multiplier, grad.indices, grad.dense_shape)
            else:
                grad *= multiplier
        multiplied.append((grad, var))
    return multiplied


def _shims(tf_slim, capture):
    """The modules that the reference's `tensorflow` and `tensorflow.contrib` imports get."""
    import tf_keras
    learning = _Proxy("tf_slim.learning", tf_slim.learning, train=capture,
                      multiply_gradients=_multiply_gradients)
    slim = _Proxy("tensorflow.contrib.slim", tf_slim, learning=learning)

    class _HParams(dict):
        """`contrib.training.HParams`, only named by the NAS code the graphs do not use."""

    contrib = types.ModuleType("tensorflow.contrib")
    contrib.slim = slim
    contrib.framework = tf_slim
    contrib.layers = importlib.import_module("tf_slim.layers")
    contrib.metrics = tf_slim.metrics
    contrib.quantize = types.SimpleNamespace()  # Named by DeepLab's quantisation option only.
    contrib.training = types.SimpleNamespace(HParams=_HParams)
    contrib.tfprof = types.SimpleNamespace(
        ProfileContext=lambda *args, **kwargs: contextlib.nullcontext())
    layers_python = types.SimpleNamespace(
        layers=importlib.import_module("tf_slim.layers.layers"),
        utils=importlib.import_module("tf_slim.layers.utils"))
    # TF 1.15's `tf.keras` was Keras 2, which tf_keras is, and `tf.layers.Layer` its legacy
    # base layer (only `conv2d_ws`, for ResNet, subclasses them).
    legacy_base = importlib.import_module("tf_keras.src.legacy_tf_layers.base")
    layers_v1 = _Proxy("tensorflow.layers", tf.compat.v1.layers, Layer=legacy_base.Layer)
    tf_v1 = _Proxy("tensorflow", tf.compat.v1, contrib=contrib, compat=tf.compat,
                   keras=tf_keras, layers=layers_v1)
    # NumPy 1.19's aliases of the builtins, gone in NumPy 2 (`mobilenet_v3` uses `np.int`).
    numpy = _Proxy("numpy", np, int=int, float=float, bool=bool, object=object)
    return {"numpy": numpy, "tensorflow": tf_v1, "tensorflow.contrib": contrib,
            "tensorflow.contrib.slim": slim, "tensorflow.contrib.slim.nets": tf_slim.nets,
            "tensorflow.contrib.framework": tf_slim,
            "tensorflow.contrib.layers.python.layers": layers_python}


class _ReferenceLoader(importlib.abc.Loader):
    """Executes a reference module with an `__import__` that maps TF 1.15's names."""

    def __init__(self, loader, module_builtins):
        self._loader = loader
        self._builtins = module_builtins

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__dict__["__builtins__"] = self._builtins
        self._loader.exec_module(module)


class _ReferenceFinder(importlib.abc.MetaPathFinder):
    """Finds the reference's top-level packages under `root` and loads them with the shims."""

    def __init__(self, root, module_builtins):
        self._root = os.path.realpath(root)
        self._builtins = module_builtins

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in _REFERENCE_TOP_LEVEL:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path or [self._root])
        if spec is None or spec.origin is None or spec.loader is None:
            return spec
        if not os.path.realpath(spec.origin).startswith(self._root + os.sep):
            return None
        spec.loader = _ReferenceLoader(spec.loader, self._builtins)
        return spec


def _make_import(shims):
    real_import = builtins.__import__

    def reference_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in shims and (fromlist or "." not in name):
            return shims[name]
        if level == 0 and name.startswith("tensorflow.contrib"):
            return shims["tensorflow"] if not fromlist else shims[name]
        return real_import(name, globals, locals, fromlist, level)

    return reference_import


class Reference:
    """The reference's train scripts, imported from a checkout with the TF 1.15 shims.

    Args:
        reference_dir: The googleinterns/wss checkout.
    """

    def __init__(self, reference_dir):
        if not os.path.isfile(os.path.join(reference_dir, "train_wss.py")):
            raise SystemExit(f"--reference_dir={reference_dir!r} has no train_wss.py; extract "
                             f"a googleinterns/wss snapshot there.")
        tf_slim = _tf_slim()
        self.capture = _Capture()
        shims = _shims(tf_slim, self.capture)
        # The `slim` the reference's modules see (`slim.dropout` can be swapped on it).
        self.slim = shims["tensorflow.contrib.slim"]
        module_builtins = dict(vars(builtins))
        module_builtins["__import__"] = _make_import(shims)
        finder = _ReferenceFinder(reference_dir, module_builtins)
        sys.meta_path.insert(0, finder)
        from absl import flags

        self.flags = flags.FLAGS
        try:
            self.train_sup = importlib.import_module("train_sup")
            # Both scripts define the same flags; the second set replaces the first, and every
            # value is set before a graph is built.
            for flag in list(self.flags.flags_by_module_dict().get("train_sup", [])):
                delattr(self.flags, flag.name)
            self.train_wss = importlib.import_module("train_wss")
            self.data_generator = importlib.import_module("core.data_generator")
        finally:
            sys.meta_path.remove(finder)
        # The reference's modules by name (`core.model`, `third_party.deeplab.common`, ...).
        self.modules = {name: module for name, module in sys.modules.items()
                        if name.split(".")[0] in _REFERENCE_TOP_LEVEL}
        self.flags.mark_as_parsed()

    def set_flags(self, mode, crop, batch, logdir, on_gpu):
        """Sets the README's flags for one clone of `batch` images of `crop` x `crop`."""
        values = dict(
            model_variant="xception_65", atrous_rates=[6, 12, 18], output_stride=16,
            decoder_output_stride=["4"], train_crop_size=[str(crop), str(crop)],
            num_clones=1, clone_on_cpu=not on_gpu, train_batch_size=batch,
            training_number_of_steps=30000, fine_tune_batch_norm=True, base_learning_rate=0.007,
            weight_decay=4e-5, upsample_logits=True, train_logdir=logdir, dataset_dir=logdir,
            tf_initial_checkpoint=None, weakly=False, seed=0)
        if mode == "pseudoseg":
            values.update(use_attention=True, att_v2=True, pseudo_src="avg", logit_norm=True,
                          soft_pseudo_label=True, temperature=0.5, unlabeled_weight=1.0,
                          pseudo_label_threshold=0.0)
        for name, value in values.items():
            setattr(self.flags, name, value)

    def build(self, mode, crop, batch, seed=0):
        """Builds one training graph with the reference's `main` and opens a session on it.

        Args:
            mode: `supervised` (`train_sup.py`) or `pseudoseg` (`train_wss.py`).
            crop: Square crop size.
            batch: Images per stream (labelled, and unlabelled for PseudoSeg).
            seed: Seed of the constant input batch.

        Returns:
            A `ReferenceStep`.
        """
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        logdir = tempfile.mkdtemp(prefix="wss_reference_")
        self.set_flags(mode, crop, batch, logdir, on_gpu)
        script = self.train_sup if mode == "supervised" else self.train_wss
        inputs = ConstantDatasets(batch, crop, seed)
        original = self.data_generator.Dataset
        self.data_generator.Dataset = inputs.dataset
        self.capture.calls.clear()
        try:
            script.main(None)
        finally:
            self.data_generator.Dataset = original
            tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        (train_op, kwargs), = self.capture.calls
        return ReferenceStep(train_op, kwargs.get("session_config"))


class ConstantDatasets:
    """Stands in for `core.data_generator.Dataset`: one constant batch per dataset."""

    def __init__(self, batch, crop, seed):
        self.batch = batch
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def dataset(self, **kwargs):
        """Same keyword arguments as the reference's `Dataset`."""
        return _ConstantDataset(self, **kwargs)


class _ConstantDataset:
    def __init__(self, owner, strong_weak=False, with_cls=False, **kwargs):
        self._owner = owner
        self._strong_weak = strong_weak
        self._with_cls = with_cls
        self.num_of_classes = NUM_CLASSES
        self.ignore_label = IGNORE_LABEL

    def get_one_shot_iterator(self):
        owner = self._owner
        rng, shape = owner.rng, (owner.batch, owner.crop, owner.crop)
        arrays = {
            "image": rng.uniform(0, 255, shape + (3,)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, shape + (1,)).astype(np.int32),
            "valid": np.ones(shape + (1,), np.int32),
        }
        if self._strong_weak:
            arrays["strong"] = rng.uniform(0, 255, shape + (3,)).astype(np.float32)
        if self._with_cls or not self._strong_weak:
            arrays["cls_label"] = rng.integers(0, 2, (owner.batch, NUM_CLASSES - 1)).astype(
                np.float32)
        local = [tf.compat.v1.GraphKeys.LOCAL_VARIABLES]
        variables = {key: tf.compat.v1.Variable(value, trainable=False, collections=local,
                                                name=f"constant_input_{key}")
                     for key, value in arrays.items()}
        return _ConstantIterator(variables)


class _ConstantIterator:
    def __init__(self, variables):
        self._variables = variables

    def get_next(self):
        return {key: tf.identity(variable) for key, variable in self._variables.items()}


class ReferenceStep:
    """A session on a reference training graph; `run()` is one training step.

    Args:
        train_op: The reference's `train_op` tensor (total loss after the update).
        session_config: The reference's `ConfigProto`.
    """

    def __init__(self, train_op, session_config=None):
        self.graph = train_op.graph
        self.train_op = train_op
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        with self.graph.as_default():
            self.session.run([tf.compat.v1.global_variables_initializer(),
                              tf.compat.v1.local_variables_initializer()])

    def run(self, options=None, run_metadata=None):
        """Runs one step and returns the total loss."""
        return float(self.session.run(self.train_op, options=options,
                                      run_metadata=run_metadata))

    def close(self):
        self.session.close()


def time_steps(step, warmup, steps):
    """Seconds of each of `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference_dir", required=True)
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", default="supervised,pseudoseg")
    args = parser.parse_args()
    reference = Reference(args.reference_dir)
    print(f"\nReference TF1 step, Xception-65 OS 16, crop {args.crop}, batch {args.batch} "
          f"(+ {args.batch} unlabelled), {args.warmup} warm-up + {args.steps} timed steps, "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}\n")
    print("| graph | median s | min s | loss |\n| --- | --- | --- | --- |")
    for mode in args.modes.split(","):
        step = reference.build(mode, args.crop, args.batch)
        times = time_steps(step.run, args.warmup, args.steps)
        print(f"| {mode} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{step.run():.3f} |")
        step.close()


if __name__ == "__main__":
    main()
