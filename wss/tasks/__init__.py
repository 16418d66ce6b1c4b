"""Training tasks for `wss.training.loop.run`.

* `wss.tasks.segmentation.SegmentationTask`: PseudoSeg (supervised, semi, weak);
* `wss.tasks.pretraining.PretrainingTask`: the backbone and image classifier on image-level
  labels, the stand-in for ImageNet pretraining.
"""
