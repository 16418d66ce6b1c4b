"""Split hygiene: count the images of each stream and keep labelled images out of the rest.

`check_splits(labelled, unlabelled, evaluation)` runs when the segmentation trainer builds its
streams. It prints how many images the labelled, unlabelled (or image-labelled) and evaluation
streams have, and fails, naming the split files, when

- a stream is empty (a split file lists no id, or the exclusions leave nothing);
- a split file lists ids that are not in the records (also checked by `read_records`);
- a labelled id is also in the unlabelled stream: an image would be both labelled and
  "unlabelled" (this happened in a published PseudoSeg 1/16 list). Bind
  `check_splits.allow_overlap = True` to allow it on purpose.

A training id that is also in the evaluation set only prints a warning (on VOC the
evaluation set is the benchmark's val set, which must not be trained on).

The ids of a stream without a split file are those of all its records, read once per process
(`wss.data.pipeline.record_ids`, cached; the labelled split check reads them anyway when the
streams share records). `check_splits.read_ids = False` skips reading records that no split
file lists (very large unlabelled sets): their count is then not shown and the overlap is
checked between split files only. TFDS sources are read once for their ids.
"""

from typing import Dict, Optional

import gin

from wss.data import pipeline, records, splits


def _show(ids, limit=5):
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def _describe(spec) -> str:
    if pipeline.is_source(spec):
        text = spec.describe()
    else:
        text = f"records {spec.file_pattern}"
    if spec.split_file:
        text += f", split {spec.split_file}"
    if spec.exclude_file:
        text += f", excluding {spec.exclude_file}"
    return text


def stream_ids(spec, read_ids: bool = True) -> Optional[frozenset]:
    """The ids a stream reads: its split file's (or all records'), minus the excluded ones.

    Args:
      spec: a `DatasetSpec` or a source (`TFDSSource`).
      read_ids: read the records' ids when there is no split file; if False, such a stream's
        ids are None (unknown).

    Returns:
      The ids, or None when unknown.

    Raises:
      FileNotFoundError: no record file matches, or a split file is missing.
      ValueError: a split file is empty or lists ids absent from the records (named).
    """
    spec = pipeline.as_spec(spec)
    source = pipeline.is_source(spec)
    present = None
    if spec.split_file:
        ids = splits.read_split_file(spec.split_file)
        present = spec.ids() if source else pipeline.record_ids(
            tuple(records.list_files(spec.file_pattern)))
        missing = [i for i in ids if i not in present]
        if missing:
            where = spec.describe() if source else f"the records {spec.file_pattern}"
            raise ValueError(f"{len(missing)} id(s) of split file {spec.split_file} are not in "
                             f"{where}: {_show(missing)}")
        ids = frozenset(ids)
    elif read_ids:
        ids = spec.ids() if source else pipeline.record_ids(
            tuple(records.list_files(spec.file_pattern)))
    else:
        if not source:
            records.list_files(spec.file_pattern)  # Fails naming a pattern without files.
        return None
    if spec.exclude_file:
        ids = ids - frozenset(splits.read_split_file(spec.exclude_file))
    return ids


@gin.configurable(denylist=["labelled", "unlabelled", "evaluation"])
def check_splits(labelled, unlabelled=None, evaluation=None, allow_overlap=False,
                 read_ids=True, verbose=True) -> Dict[str, Optional[int]]:
    """Counts the images of the streams, checks them, and prints one line per stream.

    Args:
      labelled: the labelled stream's `DatasetSpec` (or source).
      unlabelled: the unlabelled / image-labelled stream's, or None (supervised).
      evaluation: the evaluation set's, or None.
      allow_overlap: allow labelled ids in the unlabelled stream (prints a warning).
      read_ids: read the ids of streams without a split file (see the module docstring).
      verbose: print the counts.

    Returns:
      Stream name -> number of images (None when not read).

    Raises:
      ValueError: a stream is empty, a split file lists ids missing from the records, or a
        labelled id is also unlabelled (unless `allow_overlap`); the message names the files.
      FileNotFoundError: a record pattern matches nothing or a split file is missing.
    """
    streams = {"labelled": labelled, "unlabelled": unlabelled, "eval": evaluation}
    ids, counts = {}, {}
    for name, spec in streams.items():
        if spec is None:
            continue
        spec = pipeline.as_spec(spec)
        streams[name] = spec
        try:
            # Always read the labelled ids: the overlap check needs them.
            ids[name] = stream_ids(spec, read_ids or name == "labelled")
        except (FileNotFoundError, ValueError) as e:
            if name != "eval":
                raise
            raise type(e)(f"evaluation set (evaluate_checkpoint.pattern / .split_file): {e}; "
                          "bind after_training.evaluate = False to train without it") from None
        counts[name] = None if ids[name] is None else len(ids[name])
        if counts[name] == 0:
            raise ValueError(f"the {name} stream is empty: {_describe(spec)} leaves no image")
    if ids.get("unlabelled") is not None:
        both = ids["labelled"] & ids["unlabelled"]
        if both and not allow_overlap:
            raise ValueError(
                f"{len(both)} labelled image(s) are also in the unlabelled stream: "
                f"{_show(both)}. Labelled: {_describe(streams['labelled'])}; unlabelled: "
                f"{_describe(streams['unlabelled'])}. Remove them from one of the split files, "
                "or bind check_splits.allow_overlap = True to train on them both ways")
        if both:
            print(f"Warning: {len(both)} labelled image(s) are also unlabelled "
                  "(check_splits.allow_overlap = True)", flush=True)
    if ids.get("eval") is not None:
        for name in ("labelled", "unlabelled"):
            if ids.get(name) is not None and ids[name] & ids["eval"]:
                shared = ids[name] & ids["eval"]
                print(f"Warning: {len(shared)} {name} image(s) are also in the evaluation set: "
                      f"{_show(shared)}", flush=True)
    if verbose:
        for name, spec in streams.items():
            if spec is not None:
                count = "?" if counts[name] is None else counts[name]
                print(f"Data: {count} {name} images ({_describe(spec)})", flush=True)
    return counts


__all__ = ["check_splits", "stream_ids"]
