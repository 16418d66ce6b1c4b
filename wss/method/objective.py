"""The PseudoSeg training objective for one replica: model passes, pseudo labels, losses.

Passes per step (semi and weak modes), shared where the semantics allow:

1. Weak view, forward only, outside the gradient tape: decoder logits for the pseudo label,
   and the backbone features and classifier logits for Grad-CAM. The reference ran the weak
   decoder in training mode (BatchNorm on batch statistics) and *recomputed* the backbone in
   inference mode for Grad-CAM. By default we take both from the one training-mode pass
   (`gradcam_inference_pass=False`): Grad-CAM is a function of the same network on the same
   image, the batch-statistics features are the ones the classifier is being trained on, and
   it saves a backbone pass. `gradcam_inference_pass=True` restores the reference's extra
   inference-mode pass.
2. Labelled batch, forward and backward: decoder logits (L_s), classifier logits (L_x in semi
   mode), and the stop-gradient features that feed the SGC head (L_sa, which therefore trains
   only the head). The reference ran a separate backbone pass for the SGC inputs.
3. Strong view, forward and backward: decoder logits matched to the pseudo label (L_u) and,
   in weak mode, classifier logits for L_x on the image-level labels (the reference ran one
   more backbone pass on the weak view for this). With `StrongViewConfig.cutmix_area > 0`
   each strong view first takes a box from the next image's (`mix_with_partner`), and its
   pseudo label the same box of that image's.

So a PseudoSeg step runs three backbone passes, two with gradients, against the reference's
five; the supervised baseline runs one.

Self-training (`mode='self_training'`, the paper's table 6 baseline,
`wss.method.self_training`) runs
one pass too: the labelled batch and a batch of offline pseudo-labelled images (hard labels,
255 where the teacher was not confident) go through the model together, and L_s is the pixel
cross-entropy over the non-ignored pixels of both. L_x and L_sa use the labelled images only,
as in the supervised baseline; there is no weak / strong pass and no L_u.

Losses are per-replica means; the trainer scales the total by `1 / num_replicas` so that the
gradient summed over replicas is the gradient of the global mean.

The objective is the gin edge of the core: the pseudo labels' ablation switches arrive as one
`PseudoLabelConfig` (`pseudo_labels`) and are handed to `make_pseudo_labels` where it is called,
and the knobs of the plain loss functions are its arguments (`unlabelled_weight`,
`mask_align_corners`, `weight_decay`, `regularize_depthwise`, `weight_decay_exclude`).
"""

import gin
import keras
import tensorflow as tf

from wss import config as config_lib
from wss.data.records import IGNORE_LABEL
from wss.evaluation import metrics
from wss.method import gradcam, losses, pseudo_labels, sgc
from wss.method.distribution_alignment import DistributionAlignment
from wss.method.pseudo_labels import PseudoLabelConfig
from wss.resize import downsample_mask, resize_labels, resize_like, spatial_size

MODES = ("supervised", "semi", "weak", "self_training")
# Modes whose pseudo labels are made online from a weak view (and trained on a strong one).
ONLINE_PSEUDO_LABEL_MODES = ("semi", "weak")


def _one_hot_targets(labels, logits):
    """Offline labels `[B, H, W]` as one-hot targets at `logits`' resolution, and weights.

    Returns:
      (float32 `[B, h, w, C]` targets, float32 `[B, h, w]` weights, 0 at the ignore label).
    """
    labels = tf.cast(resize_labels(labels, spatial_size(logits)), tf.int32)
    known = tf.not_equal(labels, IGNORE_LABEL)
    targets = tf.one_hot(tf.where(known, labels, 0), tf.shape(logits)[-1], dtype=tf.float32)
    return tf.stop_gradient(targets), tf.cast(known, tf.float32)


def mix_with_partner(tensor, keep):
    """CutMix within a batch: `keep * x[i] + (1 - keep) * x[i + 1]`, cyclically over `i`.

    Args:
      tensor: `[B, ...]`.
      keep: broadcastable to `tensor`; 1 where image `i` keeps its own value, 0 where it takes
        image `i + 1`'s (image `B - 1` takes image 0's; with `B = 1` an image is its own
        partner, so nothing changes).

    Returns:
      The mixed tensor, of `tensor`'s shape and dtype.
    """
    partner = tf.roll(tensor, shift=-1, axis=0)
    return keep * tensor + (1 - keep) * partner


def _offline_class_labels(labels, valid, num_classes):
    """Image-level labels of offline pseudo labels: the foreground classes named in the view.

    Args:
      labels: int `[B, H, W]` offline labels (the ignore label and background name no class).
      valid: `[B, H, W]` the strong view's valid pixels (CutOut's square and padding are 0).
      num_classes: classes including background.

    Returns:
      float32 multi-hot `[B, C - 1]` (class c -> index c - 1), as `records.multi_hot`.
    """
    labels = tf.where(tf.cast(valid, tf.bool), tf.cast(labels, tf.int32), num_classes)
    hot = tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=[1, 2])
    return hot[:, 1:]


@gin.configurable(denylist=["model", "sgc_head", "mode", "teacher", "offline_labels"])
class PseudoSegObjective:
    """Computes the PseudoSeg losses of one replica's batches.

    Args:
      model: DeepLab model (`wss.models.build_deeplab`).
      sgc_head: the SGC head (`wss.method.sgc.make_sgc_head`), or None for a supervised baseline
        without L_sa.
      mode: `supervised` (labelled stream only), `semi` (labelled + unlabelled), `weak`
        (labelled + image-labelled) or `self_training` (labelled + offline pseudo-labelled).
      use_sgc_loss: train the SGC head with L_sa (needed for fusion pseudo labels).
      use_classification_loss: train the classifier with L_x.
      gradcam_inference_pass: recompute Grad-CAM inputs in inference mode (the reference).
      classifier_threshold: probability above which a class counts as present when no
        ground-truth image labels exist.
      weight_decay: DeepLab's L2 factor (4e-5 for Xception, 1e-4 for ResNet).
      num_bins: calibration bins for the ECE diagnostics.
      pseudo_labels: the pseudo labels' ablation switches, a `PseudoLabelConfig`; None builds
        one (`PseudoLabelConfig()`, so its gin bindings apply).
      unlabelled_weight: weight of L_u (the reference's `unlabeled_weight`).
      mask_align_corners: alignment used to downsample `strong_valid` to the decoder resolution
        in L_u (see `wss.resize`; the SGC head's own is an `SGCHead` argument).
      regularize_depthwise: also decay depthwise kernels (DeepLab: False).
      weight_decay_exclude: variable path substrings to leave out of the weight decay (e.g.
        `('sgc_head',)`, as the reference).
      teacher: an `wss.method.ema_teacher.EmaTeacher` (semi and weak modes), or None: the
        weak view's pass (decoder logits, classifier, Grad-CAM, SGC) then runs on the
        teacher in inference mode, and each step ends with the teacher's EMA update. Built
        by the task from `train.ema_teacher_decay`.
      teacher_mirror: with a teacher, its decoder distribution is the mean of its softmax on
        the weak view and on the mirrored weak view (mirrored back), DeepLab's evaluation-time
        flip; Grad-CAM and SGC stay those of the weak view. One more inference pass a step.
        Exact on crops of `4k + 1` pixels at the decoder's stride 4 (decoder position `j`
        mirrors to `w - 1 - j`).
      offline_labels: semi mode: the unlabelled batches' `label` is an offline pseudo label
        (`wss.method.offline_labels`, `train.offline_pseudo_labels`): no weak-view pass is run,
        and L_u trains the strong view towards its one-hot label (weight 0 where it is the
        ignore label). Set by the task; `teacher_mirror` and `pseudo_labels` are then unused.
      offline_label_resolution: where L_u meets the offline labels: 'decoder' (the labels
        sampled at the decoder's stride, one-hot, as online targets are) or 'image' (the
        strong view's logits upsampled to the labels' size, as L_s does:
        `losses.offline_unlabelled_loss`). Unused without offline labels. Measured on
        `random_colours`, 5 paired seeds (benchmarks/RESULTS.md, forty-third session): 'image'
        moved the final students by +0.06, -1.37, +3.78, -1.10 and -0.92 points (+0.09 on
        the mean), so 'decoder' stays the default.
      offline_image_labels: with offline labels, also train the classifier (L_x, as in weak
        mode on the strong view's logits) towards the foreground classes the offline label
        names inside the strong view's valid pixels (after CutMix, when bound): image-level
        pseudo labels from the renamed objects (an extension; logged as `loss_x_u` beside the
        labelled images' `loss_x`). Ignored without offline labels or without L_x.

    Raises:
      ValueError: for a bad mode, a mode without an SGC head, `teacher_mirror` with the fusion
        source, or `teacher_mirror` in a semi or weak run without a teacher (other modes make
        no pseudo labels and ignore it), naming the binding; offline labels outside semi mode,
        with a teacher or with distribution alignment.
    """

    def __init__(self, model, sgc_head=None, mode="semi", use_sgc_loss=True,
                 use_classification_loss=True, gradcam_inference_pass=False,
                 classifier_threshold=0.5, weight_decay=4e-5, num_bins=15, pseudo_labels=None,
                 unlabelled_weight=1.0, mask_align_corners=True, regularize_depthwise=False,
                 weight_decay_exclude=(), teacher=None, teacher_mirror=False,
                 offline_labels=False, offline_label_resolution="decoder",
                 offline_image_labels=False):
        if mode not in MODES:
            raise ValueError(f"PseudoSegObjective.mode={mode!r}; choose one of {MODES}")
        self.offline_labels = bool(offline_labels)
        self.offline_image_labels = config_lib.check_bool(
            "PseudoSegObjective.offline_image_labels", offline_image_labels)
        self.offline_label_resolution = config_lib.check_choice(
            "PseudoSegObjective.offline_label_resolution", offline_label_resolution,
            ("decoder", "image"))
        if self.offline_labels and (mode != "semi" or teacher is not None):
            raise ValueError(f"offline pseudo labels (train.offline_pseudo_labels) replace the "
                             f"online ones of train.mode 'semi' without an EMA teacher; got "
                             f"mode={mode!r} with {'a' if teacher is not None else 'no'} teacher")
        if mode in ONLINE_PSEUDO_LABEL_MODES and sgc_head is None:
            raise ValueError(f"mode={mode!r} needs an SGC head for its pseudo labels")
        if teacher is not None and mode not in ONLINE_PSEUDO_LABEL_MODES:
            raise ValueError(f"an EMA teacher (train.ema_teacher_decay) makes online pseudo "
                             f"labels; mode={mode!r} has none (use semi or weak)")
        if pseudo_labels is None:
            pseudo_labels = PseudoLabelConfig()
        if not isinstance(pseudo_labels, PseudoLabelConfig):
            raise TypeError(f"PseudoSegObjective.pseudo_labels={pseudo_labels!r}: expected a "
                            f"PseudoLabelConfig")
        self.model = model
        self.sgc_head = sgc_head
        self.mode = mode
        self.use_sgc_loss = use_sgc_loss and sgc_head is not None
        self.use_classification_loss = use_classification_loss
        self.gradcam_inference_pass = gradcam_inference_pass
        self.classifier_threshold = classifier_threshold
        self.weight_decay = weight_decay
        self.num_bins = num_bins
        self.pseudo_labels = pseudo_labels
        self.unlabelled_weight = config_lib.check_number(
            "PseudoSegObjective.unlabelled_weight", unlabelled_weight, minimum=0)
        self.mask_align_corners = config_lib.check_bool(
            "PseudoSegObjective.mask_align_corners", mask_align_corners)
        self.regularize_depthwise = config_lib.check_bool(
            "PseudoSegObjective.regularize_depthwise", regularize_depthwise)
        if isinstance(weight_decay_exclude, str) or not all(
                isinstance(pattern, str) for pattern in weight_decay_exclude):
            raise ValueError(f"PseudoSegObjective.weight_decay_exclude={weight_decay_exclude!r}: "
                             f"expected a tuple of strings")
        self.weight_decay_exclude = tuple(weight_decay_exclude)
        self.teacher = teacher
        self.teacher_mirror = config_lib.check_bool("PseudoSegObjective.teacher_mirror",
                                                    teacher_mirror)
        fusion = self.pseudo_labels.source == "fusion"
        if self.teacher_mirror and self.makes_pseudo_labels and fusion:
            # Measured (RESULTS.md, twenty-fifth session): the mirror's log-mean-softmax is not
            # on the logits' scale, so the fusion's shared RMS norm flattens the fused labels
            # (ECE 59-63%; random_colours 27.35% against 32.74% without the mirror).
            raise ValueError("PseudoSegObjective.teacher_mirror = True gives the decoder's "
                             "log-probabilities, which PseudoLabelConfig.source = 'fusion' cannot "
                             "normalise with SGC's logits; bind PseudoSegObjective.teacher_mirror "
                             "= False with the fusion")
        if (self.teacher_mirror and teacher is None and self.makes_pseudo_labels
                and not self.offline_labels):
            raise ValueError(f"PseudoSegObjective.teacher_mirror = True averages a teacher's "
                             f"predictions, but this {mode} run makes its pseudo labels without "
                             f"one: bind PseudoSegObjective.teacher_mirror = False (the paper's "
                             f"loop), or a teacher (train.ema_teacher_decay > 0)")
        # `PseudoLabelConfig.align_distribution`: the running class marginals (variables, so
        # built here, inside the strategy scope, and checkpointed by the task).
        self.alignment = None
        if self.pseudo_labels.align_distribution and self.makes_pseudo_labels:
            if self.offline_labels:
                raise ValueError("PseudoLabelConfig.align_distribution aligns online pseudo "
                                 "labels; train.offline_pseudo_labels = True makes none")
            self.alignment = DistributionAlignment(model.num_classes)

    @property
    def uses_unlabelled_stream(self):
        """Whether a second stream (unlabelled, image-labelled or pseudo-labelled) is read."""
        return self.mode != "supervised"

    @property
    def makes_pseudo_labels(self):
        """Whether each step makes pseudo labels from a weak view (semi and weak modes)."""
        return self.mode in ONLINE_PSEUDO_LABEL_MODES

    @property
    def trainable_variables(self):
        variables = list(self.model.trainable_variables)
        if self.sgc_head is not None:
            variables += list(self.sgc_head.trainable_variables)
        return variables

    def _sgc(self, outputs, image_labels, valid, training, teacher=False):
        model, head = ((self.teacher.model, self.teacher.sgc_head) if teacher
                       else (self.model, self.sgc_head))
        features = outputs["features"]
        logits, _ = sgc.sgc_logits(
            head, tf.stop_gradient(features["final"]),
            tf.stop_gradient(features["penultimate"]), image_labels, valid=valid,
            classifier_kernel=model.classifier_kernel, training=training,
            low_level_features=features.get("low_level"))
        return tf.cast(logits, tf.float32)

    def pseudo_label_pass(self, batch):
        """The weak view's forward pass and its pseudo labels (no gradient).

        With an EMA teacher the pass runs on the teacher's model and SGC head in inference
        mode; without one, on the model being trained, in training mode (the reference).

        Args:
          batch: an unlabelled or image-labelled batch dict.

        Returns:
          dict with `decoder_logits`, `sgc_logits` (at the decoder resolution),
          `distribution` (the fused or single-source distribution before sharpening), `targets`
          and `pixel_weights` (from `make_pseudo_labels` with this objective's
          `pseudo_labels` config); with offline labels only `labels`, the batch's.
        """
        if self.offline_labels:  # The batch's label is the pseudo label: no pass to run.
            return {"labels": batch["label"]}
        teacher = self.teacher is not None
        if teacher:  # Inference mode: the teacher is never trained.
            outputs = self.teacher.model(batch["image"], training=False)
        else:
            outputs = self.model(batch["image"], training=True)
        decoder_logits = tf.stop_gradient(tf.cast(outputs["logits"], tf.float32))
        if teacher and self.teacher_mirror:
            mirrored = self.teacher.model(tf.reverse(batch["image"], [2]), training=False)
            mirrored = tf.reverse(tf.cast(mirrored["logits"], tf.float32), [2])
            # The log of the mean softmax: logits whose softmax is that mean.
            decoder_logits = tf.stop_gradient(tf.math.log(tf.maximum(
                0.5 * (tf.nn.softmax(decoder_logits) + tf.nn.softmax(mirrored)), 1e-12)))
        cam_outputs = outputs
        if self.gradcam_inference_pass and not teacher:
            cam_outputs = self.model(batch["image"], training=False)
        known = batch["class_labels"] if self.mode == "weak" else None
        image_labels = gradcam.image_level_labels(
            cam_outputs["cls_logits"], known, threshold=self.classifier_threshold)
        sgc_logits = self._sgc(cam_outputs, image_labels, batch["valid"],
                               training=not teacher, teacher=teacher)
        sgc_logits = tf.stop_gradient(resize_like(sgc_logits, decoder_logits))
        masks = None
        if self.pseudo_labels.source == "ground_truth":
            masks = resize_labels(batch["label"], spatial_size(decoder_logits))
        valid = None  # Only class-balanced selection and alignment use the real pixels.
        if self.pseudo_labels.keep_per_class < 1 or self.alignment is not None:
            valid = downsample_mask(batch["valid"], spatial_size(decoder_logits),
                                    align_corners=self.mask_align_corners)
        ratio = None if self.alignment is None else self.alignment.ratio()
        targets, pixel_weights, distribution = pseudo_labels.make_pseudo_labels(
            decoder_logits, sgc_logits, self.pseudo_labels, image_labels=image_labels,
            masks=masks, valid=valid, return_distribution=True, alignment_ratio=ratio)
        result = {"decoder_logits": decoder_logits, "sgc_logits": sgc_logits,
                  "distribution": distribution, "targets": targets,
                  "pixel_weights": pixel_weights}
        if self.alignment is not None:  # The real pixels, for the targets' class marginal.
            result["alignment_valid"] = valid
        return result

    def compute_losses(self, labelled, unlabelled=None, pseudo=None):
        """The losses of one replica, to be called inside a gradient tape.

        Args:
          labelled: labelled batch dict.
          unlabelled: unlabelled / image-labelled batch dict (semi and weak modes), or the
            pseudo-labelled batch (self-training: `image` and `label` as a labelled batch).
          pseudo: the result of `pseudo_label_pass(unlabelled)` (semi and weak modes).

        Returns:
          (total loss, dict of named scalar losses, dict of strong-view outputs or None).
        """
        named = {}
        images, labels = labelled["image"], labelled["label"]
        if self.mode == "self_training":
            # One pass over both batches, as a supervised run on their union: L_s averages over
            # every non-ignored pixel of both.
            images = tf.concat([images, tf.cast(unlabelled["image"], images.dtype)], axis=0)
            labels = tf.concat([labels, tf.cast(unlabelled["label"], labels.dtype)], axis=0)
        out = self.model(images, training=True)
        named["loss_s"] = losses.supervised_loss(out["logits"], labels)
        if self.mode == "self_training":  # L_x and L_sa on the labelled images only.
            count = tf.shape(labelled["image"])[0]
            out = tf.nest.map_structure(lambda tensor: tensor[:count], out)
        if self.use_classification_loss and self.mode != "weak":
            named["loss_x"] = losses.classification_loss(out["cls_logits"],
                                                         labelled["class_labels"])
        if self.use_sgc_loss:
            sgc_logits = self._sgc(out, labelled["class_labels"], labelled["valid"],
                                   training=True)
            named["loss_sa"] = losses.sgc_loss(sgc_logits, labelled["label"])
        strong = None
        if self.makes_pseudo_labels:
            images, valid, targets, weights = self._strong_batch(unlabelled, pseudo)
            strong = self.model(images, training=True)
            if self.offline_labels and self.offline_image_labels and self.use_classification_loss:
                named["loss_x_u"] = losses.classification_loss(
                    strong["cls_logits"],
                    _offline_class_labels(targets, valid, self.model.num_classes))
            if self.offline_labels and self.offline_label_resolution == "image":
                named["loss_u"] = losses.offline_unlabelled_loss(
                    targets, strong["logits"], valid, weight=self.unlabelled_weight)
            else:
                if self.offline_labels:  # One-hot labels at the strong logits' resolution.
                    targets, weights = _one_hot_targets(targets, strong["logits"])
                named["loss_u"] = losses.unlabelled_loss(
                    targets, strong["logits"], valid, pixel_weights=weights,
                    weight=self.unlabelled_weight, mask_align_corners=self.mask_align_corners)
            if self.use_classification_loss and self.mode == "weak":
                named["loss_x"] = losses.classification_loss(strong["cls_logits"],
                                                             unlabelled["class_labels"])
        named["loss_wd"] = losses.weight_decay_loss(
            self.model.trainable_variables, weight=self.weight_decay,
            regularize_depthwise=self.regularize_depthwise, exclude=self.weight_decay_exclude)
        total = tf.add_n(list(named.values()))
        return total, named, strong

    def _strong_batch(self, unlabelled, pseudo):
        """The strong views L_u trains on, with their targets, valid masks and pixel weights.

        Without a `mix_mask` in the batch (`StrongViewConfig.cutmix_area = 0`, the paper) these
        are the batch's strong views and the weak views' pseudo labels. With one (CutMix), image
        `i` keeps its own pixels where its mask is 1 and takes those of image `i + 1` (cyclically,
        within this replica's batch) where it is 0; its target, valid mask and pixel weights are
        mixed by the same box, the target's sampled at the decoder's positions with the same
        alignment that L_u uses for the valid mask.

        Returns:
          (images `[B, H, W, 3]`, strong_valid `[B, H, W]`, targets `[B, h, w, C]`,
          pixel_weights `[B, h, w]` or None); with offline labels the targets are the
          (mixed) int labels `[B, H, W]`.
        """
        images, valid = unlabelled["strong"], unlabelled["strong_valid"]
        if self.offline_labels:
            targets, weights = pseudo["labels"], None
        else:
            targets, weights = pseudo["targets"], pseudo["pixel_weights"]
        if "mix_mask" not in unlabelled:
            return images, valid, targets, weights
        if self.mode == "weak":
            raise ValueError(
                "StrongViewConfig.cutmix_area > 0 mixes the strong views of two images, but "
                "mode 'weak' trains L_x on the strong view's image-level labels, which a mixed "
                "view no longer has; bind StrongViewConfig.cutmix_area = 0 in weak mode")
        keep = tf.cast(unlabelled["mix_mask"], tf.float32)
        images = mix_with_partner(images, tf.cast(keep, images.dtype)[..., None])
        valid = mix_with_partner(tf.cast(valid, tf.float32), keep)
        if self.offline_labels:  # Full-resolution int labels: exact, the mask is 0 or 1.
            mixed = tf.round(mix_with_partner(tf.cast(targets, tf.float32), keep))
            return images, valid, tf.cast(mixed, targets.dtype), None
        keep_small = downsample_mask(keep, spatial_size(targets),
                                     align_corners=self.mask_align_corners)
        targets = mix_with_partner(tf.cast(targets, tf.float32), keep_small[..., None])
        if weights is not None:
            weights = mix_with_partner(tf.cast(weights, tf.float32), keep_small)
        return images, valid, targets, weights

    def train_step(self, optimizer, labelled, unlabelled=None, num_replicas=1):
        """One replica's optimizer step: pseudo labels, losses, gradients, update.

        Args:
          optimizer: a Keras optimizer (a `LossScaleOptimizer` scales the loss).
          labelled: labelled batch dict.
          unlabelled: unlabelled / image-labelled batch dict (semi and weak modes), or the
            pseudo-labelled batch (self-training).
          num_replicas: replicas in sync; the loss is divided by it so that the gradients
            summed over replicas are those of the global mean.

        Returns:
          (named losses including `loss_total`, pseudo-label dict or None, strong-view
          outputs or None).
        """
        pseudo = self.pseudo_label_pass(unlabelled) if self.makes_pseudo_labels else None
        if self.alignment is not None:
            self.alignment.update(labelled["label"], pseudo["targets"],
                                  pseudo["alignment_valid"])
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            total, named, strong = self.compute_losses(labelled, unlabelled, pseudo)
            scaled = total / num_replicas
            if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        if self.teacher is not None:
            self.teacher.update()
        named["loss_total"] = total
        return named, pseudo, strong

    def diagnostics(self, unlabelled, pseudo):
        """Pseudo-label quality against the masks of the unlabelled stream, where it has them.

        Calibration is measured on the three distributions of paper figure 5a: the decoder's
        softmax, the SGC head's softmax and the pseudo-label distribution before sharpening
        (`fused`: the calibrated fusion, or the single source of an ablation), and on the final
        targets (`targets`: after sharpening and any restriction, what L_u trains on);
        confidence and accuracy on the final targets.

        Returns:
          dict of additive statistics (sum them over replicas): reliability bins of the decoder,
          SGC and fused distributions and of the final targets, pixel counts of correct pseudo
          labels (all of them, and those that keep a weight in L_u), and the summed confidence
          of the kept targets.
        """
        labels = resize_labels(unlabelled["label"], spatial_size(pseudo["decoder_logits"]))
        valid = tf.cast(tf.not_equal(labels, IGNORE_LABEL), tf.float32)
        fused = pseudo["targets"]
        stats = {}
        for name, probs in (("decoder", tf.nn.softmax(pseudo["decoder_logits"])),
                            ("sgc", tf.nn.softmax(pseudo["sgc_logits"])),
                            ("fused", pseudo["distribution"]), ("targets", fused)):
            data = metrics.reliability_data(probs, labels, num_bins=self.num_bins)
            for key in ("count", "correct", "confidence_sum"):
                stats[f"{name}_{key}"] = data[key]
        real = downsample_mask(unlabelled["valid"], spatial_size(fused))
        kept = real * pseudo["pixel_weights"]
        stats["pseudo_confidence_sum"] = tf.reduce_sum(tf.reduce_max(fused, axis=-1) * kept)
        stats["pseudo_pixels"] = tf.reduce_sum(kept)
        stats["pseudo_real_pixels"] = tf.reduce_sum(real)
        correct = tf.cast(tf.equal(tf.argmax(fused, -1, output_type=tf.int32), labels),
                          tf.float32)
        stats["pseudo_correct"] = tf.reduce_sum(correct * valid)
        stats["pseudo_labelled_pixels"] = tf.reduce_sum(valid)
        stats["pseudo_kept_correct"] = tf.reduce_sum(correct * valid * kept)
        stats["pseudo_kept_labelled_pixels"] = tf.reduce_sum(valid * kept)
        return stats
