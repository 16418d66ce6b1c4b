"""Throughput of the unlabelled input stream beside decode-only, on generated JPEG records.

    python benchmarks/bench_pipeline.py [--num_images=128] [--crop=513] [--batch_size=8]

Writes `--num_images` random-ish JPEG images (about 500 x 375, with masks, like VOC) as
TFRecords in a temporary directory, then times in the same process:

  decode     TFRecord read + parse + JPEG/PNG decode (`records.parse_example`), batch 1;
  labelled   the labelled stream (decode + DeepLab weak view), batched;
  unlabelled the unlabelled stream (decode + weak view + strong view), batched.

All three read the records the same way (`pipeline.read_records`, shuffle buffer, repeat) and
run their map with AUTOTUNE parallelism, then prefetch; warm-up elements (tracing, XLA
compilation, AUTOTUNE ramp-up) are excluded. For each the script prints images per wall-clock
second and CPU milliseconds per image (process CPU time, all threads, over the timed images)
and images per CPU-second ("per core"): on a shared machine the CPU figures are the stable
ones. Target: the unlabelled stream costs at most 2x decode-only time per image.
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
    """Returns (images per wall-clock second, CPU seconds of this process per image).

    The warm-up elements (tracing, XLA compilation, AUTOTUNE ramp-up, filling the shuffle
    buffer) are excluded. CPU time counts every thread of the process (tf.data workers
    included), so it is the cost per image whatever the other load on the machine.
    """
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(num_elements):
        next(iterator)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    del iterator  # stops its background threads before the next pipeline runs
    images = num_elements * images_per_element
    return images / elapsed, cpu / images


def decode_only(pattern: str, num_classes: int = 21, seed: int = 0) -> tf.data.Dataset:
    """Read, parse and decode (image and mask), as the training streams read records (same
    reader, shuffle buffer and repeat), unbatched, AUTOTUNE, prefetch."""
    fn = tf.autograph.experimental.do_not_convert(
        lambda s: records.parse_example(s, num_classes)["image"])
    ds = pipeline.read_records(pattern, shuffle_files=True, seed=seed)
    ds = ds.shuffle(1000, seed=seed).repeat()
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


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
        warmup = max(1, 32 // args.batch_size)
        results = {
            "decode": _time(decode_only(pattern), 1, args.images, warmup=32),
            "labelled": _time(pipeline.labelled_dataset(
                pattern, args.batch_size, 21, crop_size=crop, seed=0), args.batch_size,
                batches, warmup=warmup),
            "unlabelled": _time(pipeline.unlabelled_dataset(
                pattern, args.batch_size, 21, crop_size=crop, seed=0), args.batch_size,
                batches, warmup=warmup),
        }
    print(f"crop {args.crop}, batch {args.batch_size}, {cores} CPU core(s), "
          f"{args.num_images} JPEG records of ~500x375, {args.images} images timed each")
    print(f"  {'':10s} {'images/s':>9s} {'wall ms/img':>12s} {'CPU ms/img':>11s} "
          f"{'images/s/core':>14s}")
    for name, (rate, cpu) in results.items():
        print(f"  {name:10s} {rate:9.1f} {1000.0 / rate:12.2f} {1000.0 * cpu:11.2f} "
              f"{1.0 / cpu:14.1f}")
    print("  (images/s/core = images per CPU-second of this process, all threads)")
    wall = results["decode"][0] / results["unlabelled"][0]
    cpu = results["unlabelled"][1] / results["decode"][1]
    print(f"  unlabelled stream / decode-only per image: {wall:.2f}x wall time, {cpu:.2f}x CPU "
          "time (target <= 2x)")
    return results


if __name__ == "__main__":
    main()
