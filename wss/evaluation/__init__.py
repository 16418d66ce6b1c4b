"""Evaluation: confusion matrices and mIoU (`metrics`), checkpoint evaluation, best / last
checkpoint tracking and multi-scale inference (`evaluator`). The command line is
`python -m wss.evaluate`.
"""
