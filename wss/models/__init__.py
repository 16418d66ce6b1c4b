"""DeepLabv3+ models for PseudoSeg: backbones, head, and DeepLab TF1 checkpoint loading.

Public API:

* `build_deeplab(...)`: a built `DeepLabV3Plus` (gin-configurable);
* `load_deeplab_checkpoint(model, path, skip_mismatch=False)`: restores a DeepLab TF1
  checkpoint by explicit name table and returns a `CheckpointReport`.
"""

from wss.models.checkpoints import (
    CheckpointReport,
    deeplab_name_table,
    load_deeplab_checkpoint,
)
from wss.models.deeplab import BACKBONES, DeepLabV3Plus, build_deeplab, default_atrous_rates

__all__ = [
    "BACKBONES",
    "CheckpointReport",
    "DeepLabV3Plus",
    "build_deeplab",
    "deeplab_name_table",
    "default_atrous_rates",
    "load_deeplab_checkpoint",
]
