"""Throughput of the unlabelled input stream beside decode-only, on generated JPEG records.

    python benchmarks/bench_pipeline.py [--num_images=128] [--crop=513] [--batch_size=8]

Writes `--num_images` random-ish JPEG images (about 500 x 375, with masks, like VOC) as
TFRecords in a temporary directory, then times in the same process:

  decode     TFRecord read + parse + JPEG/PNG decode (`records.parse_example`), batch 1;
  labelled   the labelled stream (decode + DeepLab weak view), batched;
  unlabelled the unlabelled stream (decode + weak view + strong view), batched.

Each pipeline runs with AUTOTUNE parallelism and prefetch. Figures are images per second and
per CPU core (the cores this process may use). Target: the unlabelled stream costs at most 2x
decode-only time per image.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from wss.data import pipeline, records


def make_records(directory: str, num_images: int, seed: int = 0) -> str:
    """Writes smooth random JPEG images with blocky masks; returns the file pattern."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(num_images):
        h, w = (375, 500) if i % 2 == 0 else (500, 375)
        low = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3)).astype(np.float32)
        image = tf.image.resize(low[None], (h, w), method="bicubic")[0].numpy()
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[y:y + h // 3, x:x + w // 3] = rng.integers(1, 21)
        examples.append(records.encode_example(image, f"bench_{i:05d}", mask=mask,
                                               image_format="jpeg"))
    prefix = os.path.join(directory, "bench")
    records.write_records(examples, prefix, num_shards=4)
    return prefix + "-*"


def _time(dataset, images_per_element: int, num_elements: int, warmup: int):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_elements):
        next(iterator)
    elapsed = time.perf_counter() - start
    return num_elements * images_per_element / elapsed


def decode_only(pattern: str, num_classes: int = 21) -> tf.data.Dataset:
    """Read, parse and decode, repeated, AUTOTUNE, prefetch."""
    fn = tf.autograph.experimental.do_not_convert(
        lambda s: records.parse_example(s, num_classes)["image"])
    ds = tf.data.TFRecordDataset(records.list_files(pattern), num_parallel_reads=4).repeat()
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--images", type=int, default=256, help="Images timed per pipeline")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        pattern = make_records(tmp, args.num_images)
        crop = (args.crop, args.crop)
        batches = max(1, args.images // args.batch_size)
        results = {
            "decode": _time(decode_only(pattern), 1, args.images, warmup=16),
            "labelled": _time(pipeline.labelled_dataset(
                pattern, args.batch_size, 21, crop_size=crop, seed=0), args.batch_size,
                batches, warmup=2),
            "unlabelled": _time(pipeline.unlabelled_dataset(
                pattern, args.batch_size, 21, crop_size=crop, seed=0), args.batch_size,
                batches, warmup=2),
        }
    print(f"crop {args.crop}, batch {args.batch_size}, {cores} CPU core(s), "
          f"{args.num_images} JPEG records of ~500x375")
    for name, rate in results.items():
        print(f"  {name:10s} {rate:8.1f} images/s  {rate / cores:8.1f} images/s/core  "
              f"{1000.0 / rate:7.2f} ms/image")
    ratio = results["decode"] / results["unlabelled"]
    print(f"  unlabelled stream / decode-only time per image: {ratio:.2f}x (target <= 2x)")
    return results


if __name__ == "__main__":
    main()
