"""The PseudoSeg method: the paper's equations, each in its module.

* `gradcam`: Grad-CAM of the classifier's classes (eq. 1-2), max-normalised, absent classes
  zeroed;
* `sgc`: the self-attention Grad-CAM head (eq. 3) and its background score;
* `pseudo_labels`: calibrated fusion (eq. 4), sharpening and the ablation switches
  (`PseudoLabelConfig`);
* `losses`: L_s, L_x, L_sa, L_u and DeepLab's weight decay;
* `objective`: `PseudoSegObjective`, the per-replica passes and losses of one step;
* `self_training`: the paper's table 6 baseline (offline pseudo labels from a teacher).
"""
