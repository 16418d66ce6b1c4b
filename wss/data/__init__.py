"""Datasets and input pipelines: TFRecord schema, augmentation, streams and splits.

Submodules: `records` (schema, reader/writer), `augment` (weak and strong views),
`pipeline` (per-replica tf.data streams), `splits` (labelled subsets), `convert_utils`
(shared converter code), `synthetic` (a tiny generated dataset for tests and smoke runs).
"""
