"""Training tasks for `wss.training.loop.run`.

* `wss.tasks.segmentation.SegmentationTask`: PseudoSeg (supervised, semi, weak) and the
  self-training baseline (`self_training`);
* `wss.tasks.pretraining.PretrainingTask`: the backbone and image classifier on image-level
  labels, the stand-in for ImageNet pretraining.
"""
