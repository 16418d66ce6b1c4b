"""Names of the files a run leaves in its log directory, and `wss.train`'s preemption status.

The writers (`wss.training.loop`, `wss.evaluation.evaluator`) and the readers
(`launch/sweep.py` and its
`launch/sweeps/` modules) take the names from here. This module imports nothing, so a launcher
can read run directories without starting TensorFlow.
"""

# The result of a training run (`wss.training.loop.run`): the last step, `finished`, the final
# losses; in the log directory.
RESULT_FILENAME = "train_result.json"
# Evaluation results of a checkpoint (`wss.evaluation.evaluator.write_results`):
# CHECKPOINT_PATH + this
# suffix, e.g. `LOGDIR/ckpt-1000.eval.json`.
EVAL_SUFFIX = ".eval.json"
# Exit status of `wss.train` / `wss.pretrain` after a SIGTERM (preemption) that saved a
# checkpoint: sysexits.h's EX_TEMPFAIL, "try again later". Rerunning the command resumes.
PREEMPTED_EXIT_CODE = 75
