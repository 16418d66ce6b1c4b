"""The interface between the training loop and a training objective.

A task owns everything that is specific to what is trained: its input streams, its models,
the replica step that computes its losses and applies the update, what it puts in TensorBoard
and which of its objects a checkpoint holds. The loop (`wss.training.loop.run`) owns the rest.

Call order, all by the loop:

0. `prepare(logdir, chief)`, once the loop holds the log directory's lock: work that the
   streams depend on, e.g. the offline pseudo labels of self-training (which may build and
   run a teacher model; the loop reseeds afterwards);
1. `make_streams(strategy, seed, skip_batches)`, before any model work of the task, so that a
   missing file or split fails fast; `input_specs()` then, to check that no stream is empty;
2. `build()` inside `strategy.scope()`, then `trainable_variables` to build the optimizer;
3. `checkpoint_objects()` once, for the checkpoint; when the log directory has no checkpoint
   yet, `start_from_run()`, and `warm_start(path)` if that started nothing and an initial
   checkpoint is given;
4. `replica_step(optimizer, batches, num_replicas, with_images)` inside `strategy.run`, under
   `tf.function`, once per step;
5. `write_scalar_summaries(stats)` and `write_image_summaries(images)` inside the loop's
   summary writer;
6. `run_summary(stats)` at the end, for the result file (`stats` may be empty).
"""

import abc
import dataclasses
from typing import Dict, Mapping, Optional

import tensorflow as tf


@dataclasses.dataclass
class StepOutput:
    """What one replica step returns.

    Attributes:
      losses: named scalar losses (averaged over replicas by the loop); a NaN or infinite one
        stops training. Include the total as `loss_total`.
      stats: additive statistics (summed over replicas, accumulated between scalar summaries
        and handed to `write_scalar_summaries`), e.g. pixel counts.
      images: tensors to show in TensorBoard (replica 0's are kept), only when asked.
    """

    losses: Dict[str, tf.Tensor]
    stats: Dict[str, tf.Tensor] = dataclasses.field(default_factory=dict)
    images: Dict[str, tf.Tensor] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """A training objective that `wss.training.loop.run` can drive.

    Attributes:
      name: a short name for logs (`pseudoseg-semi`, `pretraining`, ...).
    """

    name = "task"

    def prepare(self, logdir: str, chief: bool) -> None:
        """Work that must precede the streams and needs the log directory (default: nothing).

        Called by the loop once it holds the lock of its directory, before `make_streams`.
        Only the chief may write into `logdir`; the other workers of a multi-worker run (their
        own lock is that of a private directory) wait for what the chief writes.

        Args:
          logdir: the run's log directory (the chief's).
          chief: whether this process is the chief.
        """
        del logdir, chief

    @abc.abstractmethod
    def make_streams(self, strategy: tf.distribute.Strategy, seed, skip_batches: int
                     ) -> Mapping[str, tf.distribute.DistributedDataset]:
        """Builds the distributed input streams (global batch sizes).

        Args:
          strategy: the distribution strategy.
          seed: the run's seed, or None (streams are then not reproducible).
          skip_batches: batches already trained on (resume of a seeded run).

        Returns:
          name -> distributed dataset; `replica_step` gets one batch of each per step.
        """

    @abc.abstractmethod
    def build(self) -> None:
        """Builds the models (called inside `strategy.scope()`)."""

    @property
    @abc.abstractmethod
    def trainable_variables(self):
        """The variables the optimizer updates."""

    @property
    def variables(self):
        """Every model variable (for the multi-worker weight digests)."""
        return self.trainable_variables

    @abc.abstractmethod
    def checkpoint_objects(self) -> Dict[str, object]:
        """Trackables that a checkpoint holds besides the optimizer (models, RNG states)."""

    def start_from_run(self) -> Optional[str]:
        """Initialises the models from an earlier run that `prepare` chose, if any.

        Returns:
          The checkpoint path restored, or None (the default: no such run; the loop then
          warm-starts from its `init_checkpoint`, if any).
        """
        return None

    def warm_start(self, path: str) -> str:
        """Initialises the models from `path` (the loop's `init_checkpoint`).

        Returns:
          A one-line summary of what was loaded.

        Raises:
          NotImplementedError: if the task cannot warm-start.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot warm-start from {path}")

    @property
    @abc.abstractmethod
    def images_per_step(self) -> int:
        """Images one replica consumes per step (for the images/s figure)."""

    @abc.abstractmethod
    def replica_step(self, optimizer, batches: Mapping[str, Dict[str, tf.Tensor]],
                     num_replicas: int, with_images: bool) -> StepOutput:
        """One replica's training step: losses, gradients and the optimizer update.

        Args:
          optimizer: the Keras optimizer.
          batches: this replica's batch of each stream.
          num_replicas: replicas in sync (scale losses by its inverse before summing
            gradients so that they are those of the global mean).
          with_images: also return images for TensorBoard. Fixed for a run (true when image
            summaries are on): the step is traced once, and the loop writes the images of the
            steps that are due.

        Returns:
          A `StepOutput`.
        """

    def input_specs(self) -> Dict[str, tuple]:
        """Stream name -> (`wss.data.pipeline.DatasetSpec`, num_classes or None).

        The loop checks before training that no stream is empty, and after an input error it
        re-reads these records to name the file and record at fault. Default: none.
        """
        return {}

    def write_scalar_summaries(self, stats: Mapping[str, float]) -> None:
        """Writes task-specific scalars from the accumulated `stats` (default: nothing)."""
        del stats

    def run_summary(self, stats: Mapping[str, float]) -> Dict[str, object]:
        """Entries for the run's result file from the stats of its last quarter (default none).

        Args:
          stats: the replica stats summed over the last quarter of `num_steps` (those trained
            in this invocation); empty when none was.

        Returns:
          A JSON-serialisable dict merged into `train_result.json`.
        """
        del stats
        return {}

    def write_image_summaries(self, images: Mapping[str, tf.Tensor]) -> None:
        """Writes the images of a step that asked for them (default: nothing)."""
        del images
