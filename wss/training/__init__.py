"""Training machinery that knows nothing of PseudoSeg: the loop and the task interface.

* `wss.training.task.Task`: what an objective provides (streams, models, a replica step,
  summaries, checkpointed state);
* `wss.training.loop.run`: the `tf.distribute` loop that drives a task (restore and warm
  start, steps, logs, summaries, checkpoints, preemption, the NaN guard, the result file).

The tasks live in `wss.tasks` (PseudoSeg segmentation, classification pretraining).
"""
