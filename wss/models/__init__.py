"""DeepLabv3+ models for PseudoSeg: backbones, head, and DeepLab TF1 checkpoint loading.

Public API:

* `build_deeplab(...)`: a built `DeepLabV3Plus` (gin-configurable);
* `build_image_classifier(...)`: the backbone with DeepLab's pooled classifier, the network
  that pretraining trains (`ImageClassifier`);
* `load_deeplab_checkpoint(model, path, skip_mismatch=False)`: restores a DeepLab TF1
  checkpoint by explicit name table and returns a `CheckpointReport`;
* `save_tf1_checkpoint(model, path)`: writes a model under DeepLab's TF1 names.
"""

from wss.models.checkpoints import (
    CheckpointReport,
    deeplab_name_table,
    load_deeplab_checkpoint,
    save_tf1_checkpoint,
)
from wss.models.classifier import ImageClassifier, build_image_classifier
from wss.models.deeplab import BACKBONES, DeepLabV3Plus, build_deeplab, default_atrous_rates

__all__ = [
    "BACKBONES",
    "CheckpointReport",
    "DeepLabV3Plus",
    "ImageClassifier",
    "build_deeplab",
    "build_image_classifier",
    "deeplab_name_table",
    "default_atrous_rates",
    "load_deeplab_checkpoint",
    "save_tf1_checkpoint",
]
