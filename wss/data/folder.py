"""Your own data: folders of images and masks -> TFRecords, split files and `dataset.json`.

The library side of `datasets/build_folder.py` (see docs/own_data.md):

- `--images=DIR`: images (JPEG, PNG, BMP, TIFF, WebP), any mode: RGBA, grey, palette and
  CMYK images are converted to RGB (stored as PNG); RGB JPEG and PNG are stored as they are.
- `--masks=DIR`: PNG masks matched to images by file stem (`cat_1.jpg` <-> `cat_1.png`, or
  `cat_1_mask.png` with `--mask_suffix=_mask`). A mask holds class ids: a grey ("L") PNG, or
  a palette ("P") PNG whose indices are the class ids, like VOC's `SegmentationClass`; 255 is
  ignored. Images without a mask join the unlabelled split.
- `--unlabelled=DIR`: more images without masks.
- `--image_labels=FILE.csv`: image-level labels of unlabelled images, `id,labels` per line,
  labels separated by spaces or `;`, as class names (with a class-names file) or ids.
- `--class_names=FILE`: one class name per line, line i naming class i (0 is usually
  background). Without it, `--num_classes` or the largest mask value + 1.

Written to `--output_dir`: `train-*.tfrecord` (labelled and unlabelled training images),
`val-*.tfrecord` (a held-out fraction of the masked images, drawn with `--seed`), the split
files `labelled.txt`, `unlabelled.txt`, `val.txt`, `class_names.txt` and `dataset.json`
(number of classes, class names, counts, skipped files), which `own_semi.gin` reads.

Every file is read and checked before anything is written. Unreadable files, an image and
mask of different sizes, a mask without an image, mask values or image labels that are not
classes, two images with one id: each is an error naming the file; all of them are listed at
once. With `skip_bad=True` they are listed, left out (written to `skipped.txt`) and the rest
is converted.
"""

import csv
import hashlib
import io
import json
import math
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import gin
import numpy as np

from wss.data import records, splits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DATASET_INFO = "dataset.json"


class BuildError(ValueError):
    """Bad input files; the message lists each with its problem."""


class Entry(NamedTuple):
    """One image to convert: its id, image file, optional mask file and image labels."""

    image_id: str
    image_path: str
    mask_path: Optional[str] = None
    class_labels: Optional[Tuple[int, ...]] = None


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _id_of(text: str) -> str:
    """The id of a file name or id: no directory, no image extension."""
    name = os.path.basename(text)
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_EXTENSIONS else name


def list_images(directory: str, what: str, problems: List[str],
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Dict[str, str]:
    """Maps id (file stem) -> path of the image files in `directory` (recursively).

    Two files with one stem are a problem naming both. Files with other extensions are
    ignored, except that a mask directory's non-PNG images are a problem (JPEG changes ids).
    """
    if not directory or not os.path.isdir(directory):
        raise FileNotFoundError(f"{what} directory {directory!r} does not exist")
    found: Dict[str, str] = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            ext = os.path.splitext(name)[1].lower()
            if ext not in extensions:
                if ext in IMAGE_EXTENSIONS:
                    problems.append(f"{path}: {what} must be PNG (lossy formats change class "
                                    "ids)")
                continue
            image_id = _stem(name)
            if image_id in found:
                problems.append(f"{path}: same id {image_id!r} as {found[image_id]}")
                continue
            found[image_id] = path
    return found


def read_class_names(path: str) -> List[str]:
    """Reads a class-names file: one name per line, line i naming class i.

    Blank lines and lines starting with `#` are skipped.

    Raises:
      BuildError: fewer than two names, or a name twice (naming the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--class_names file {path!r} does not exist")
    with open(path) as f:
        names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if len(names) < 2:
        raise BuildError(f"{path}: needs at least two class names (background and one class), "
                         f"found {len(names)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BuildError(f"{path}: class names {twice} appear more than once")
    if len(names) > 255:
        raise BuildError(f"{path}: {len(names)} classes; masks hold at most 255 (255 = ignore)")
    return names


def read_image_labels(path: str, class_names: Optional[Sequence[str]],
                      num_classes: Optional[int], problems: List[str]) -> Dict[str, List[int]]:
    """Reads `id,labels` lines: labels are class names or ids, separated by spaces or `;`.

    A header line (`id,...` / `image,...` / `filename,...`) is skipped. Unknown class names
    or ids are problems naming the file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--image_labels file {path!r} does not exist")
    lookup = {n: i for i, n in enumerate(class_names or [])}
    labels: Dict[str, List[int]] = {}
    with open(path, newline="") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip() or row[0].startswith("#"):
                continue
            image_id = _id_of(row[0].strip())
            if line_number == 1 and image_id.lower() in ("id", "image", "image_id", "filename"):
                continue
            tokens = [t for cell in row[1:] for t in re.split(r"[;\s|]+", cell) if t]
            ids = []
            for token in tokens:
                if token in lookup:
                    ids.append(lookup[token])
                elif re.fullmatch(r"\d+", token):
                    ids.append(int(token))
                    if num_classes is not None and ids[-1] >= num_classes:
                        problems.append(f"{path}:{line_number}: class id {token} is not below "
                                        f"the number of classes, {num_classes}")
                else:
                    hint = "" if class_names else " (class names need --class_names)"
                    problems.append(f"{path}:{line_number}: unknown class {token!r}{hint}")
            if image_id in labels:
                problems.append(f"{path}:{line_number}: image {image_id!r} listed twice")
            labels[image_id] = ids
    return labels


def read_mask(path: str) -> np.ndarray:
    """Reads a PNG mask of class ids as a uint8 `[H, W]` array.

    Grey ("L", "I", "I;16"), palette ("P", the index is the class) and 1-bit masks are read
    as class ids; an RGB mask whose three channels are equal is read as grey.

    Raises:
      records.RecordError: unreadable, colour-coded or values above 255 (naming the file).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.array(im)
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes a named error
        raise records.RecordError(f"{path}: cannot read the mask: {e}") from None
    if mode in ("RGB", "RGBA"):
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise records.RecordError(
                f"{path}: colour-coded {mode} mask; save class ids as a grey or palette PNG "
                "(pixel value or palette index = class id)")
        array = array[..., 0]
    elif mode == "LA":
        array = array[..., 0]
    elif mode not in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
        raise records.RecordError(f"{path}: unsupported mask mode {mode}")
    array = np.asarray(array).astype(np.int64)
    if array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise records.RecordError(f"{path}: mask values up to {array.max()}; class ids must "
                                  "be 0..254 (255 = ignore)")
    return array.astype(np.uint8)


def read_image(path: str) -> Tuple[bytes, Tuple[int, int]]:
    """An image file as JPEG or PNG bytes of an RGB image, and its (height, width).

    RGB JPEG and PNG files are returned as they are; other modes (RGBA, grey, palette, CMYK)
    and formats are converted to RGB and encoded as PNG.

    Raises:
      records.RecordError: the file cannot be decoded (naming it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # Decodes the whole file: a truncated one fails here.
            size = (im.size[1], im.size[0])
            if im.format in ("JPEG", "PNG") and im.mode == "RGB":
                return data, size
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise ValueError(f"{im.mode} (16-bit or float) images are not supported; "
                                 "convert to 8-bit")
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise records.RecordError(f"{path}: cannot read the image: not an image file that can "
                                  "be decoded (empty, corrupt or an unknown format)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes a named error
        raise records.RecordError(f"{path}: cannot read the image: {e}") from None
    return records.encode_image(np.asarray(rgb), "png"), size


def encode_entry(entry: Entry, num_classes: int) -> bytes:
    """The serialized example of one entry, every check made (errors name the files)."""
    image_bytes, (height, width) = read_image(entry.image_path)
    mask = None
    if entry.mask_path is not None:
        mask = read_mask(entry.mask_path)
        if mask.shape != (height, width):
            raise records.RecordError(
                f"{entry.mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image "
                f"{entry.image_path} is {height}x{width}")
        values = np.unique(mask)
        bad = values[(values >= num_classes) & (values != records.IGNORE_LABEL)]
        if bad.size:
            raise records.RecordError(
                f"{entry.mask_path}: mask values {bad.tolist()} are not classes (0.."
                f"{num_classes - 1}, 255 = ignore); check --class_names / --num_classes")
    try:
        return records.encode_example(image_bytes, entry.image_id, mask=mask,
                                      class_labels=entry.class_labels, num_classes=num_classes)
    except records.RecordError as e:
        raise records.RecordError(f"{entry.image_path}: {e}") from None


def split_val(ids: Sequence[str], fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Holds out `round(len(ids) * fraction)` ids (at least one, at most all but one).

    The ids are ordered by a hash of `seed` and the id, so each id's side depends only on the
    seed and the number held out, not on the order of the files.

    Returns:
      (kept ids, held-out ids), each sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val_fraction must be in [0, 1), got {fraction}")
    count = 0
    if fraction > 0 and len(ids) >= 2:
        count = min(len(ids) - 1, max(1, int(math.floor(len(ids) * fraction + 0.5))))

    def key(i):
        return hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()

    held = set(sorted(ids, key=key)[:count])
    return sorted(i for i in ids if i not in held), sorted(held)


def plan(images_dir: str, masks_dir: str, unlabelled_dir: Optional[str] = None,
         image_labels: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
         num_classes: Optional[int] = None, mask_suffix: str = ""):
    """Lists the entries: (masked, unmasked, problems, notes). Reads no pixels."""
    problems: List[str] = []
    notes: List[str] = []
    images = list_images(images_dir, "--images", problems)
    masks = {}
    for stem, path in list_images(masks_dir, "mask", problems, extensions=(".png",)).items():
        if mask_suffix and stem.endswith(mask_suffix):
            stem = stem[:-len(mask_suffix)]
        masks[stem] = path
    for stem, path in sorted(masks.items()):
        if stem not in images:
            problems.append(f"{path}: mask without an image (no file {stem}.* in "
                            f"{images_dir})")
    unlabelled = list_images(unlabelled_dir, "--unlabelled", problems) if unlabelled_dir else {}
    for stem, path in sorted(unlabelled.items()):
        if stem in images:
            problems.append(f"{path}: id {stem!r} is also in --images ({images[stem]})")
    labels = {}
    if image_labels:
        labels = read_image_labels(image_labels, class_names, num_classes, problems)
    masked = [Entry(i, p, masks[i]) for i, p in sorted(images.items()) if i in masks]
    no_mask = sorted(i for i in images if i not in masks)
    if no_mask:
        notes.append(f"{len(no_mask)} image(s) of --images have no mask and are unlabelled: "
                     f"{', '.join(no_mask[:5])}{' ...' if len(no_mask) > 5 else ''}")
    pool = {i: images[i] for i in no_mask}
    pool.update(unlabelled)
    unmasked = []
    for i, p in sorted(pool.items()):
        label = labels.get(i)
        unmasked.append(Entry(i, p, None, None if label is None else tuple(label)))
    unlisted = [e.image_id for e in unmasked if e.class_labels is None]
    if image_labels and unlisted:
        notes.append(f"{len(unlisted)} unlabelled image(s) have no line in {image_labels}; "
                     "with train.mode = 'weak' they count as showing no class: "
                     f"{', '.join(unlisted[:5])}{' ...' if len(unlisted) > 5 else ''}")
    masked_ids = {e.image_id for e in masked}
    for i in sorted(labels):
        if i not in pool and i not in masked_ids:
            problems.append(f"{image_labels}: image {i!r} has labels but no image file")
    used = sum(1 for i in labels if i in masked_ids)
    if used:
        notes.append(f"{used} image label line(s) of {image_labels} are for masked images; "
                     "their masks give their classes")
    return masked, unmasked, problems, notes


def _infer_num_classes(masked: Sequence[Entry], problems: List[str]) -> int:
    top = 0
    for entry in masked:
        try:
            values = np.unique(read_mask(entry.mask_path))
        except records.RecordError:
            continue  # Reported when the entry is encoded.
        values = values[values != records.IGNORE_LABEL]
        if values.size:
            top = max(top, int(values.max()))
    if top == 0 and masked:
        problems.append("masks hold only class 0 (and 255): give --num_classes or "
                        "--class_names")
    return max(top + 1, 2)


def _class_names_and_count(class_names_file: Optional[str], num_classes: Optional[int]):
    """The class names (or None) and the number of classes (or None: from the masks).

    Raises:
      BuildError: `num_classes` disagrees with the class-names file or is not in 2..255.
    """
    class_names = read_class_names(class_names_file) if class_names_file else None
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise BuildError(f"--num_classes={num_classes} but {class_names_file} names "
                             f"{len(class_names)} classes")
        num_classes = len(class_names)
    if num_classes is not None and not 2 <= num_classes <= 255:
        raise BuildError(f"--num_classes={num_classes}: must be in 2..255")
    return class_names, num_classes


def _check_image_label_ids(unmasked: Sequence[Entry], num_classes: int,
                           image_labels: Optional[str], problems: List[str]) -> None:
    """Adds a problem for each unmasked entry whose image labels are not classes."""
    for entry in unmasked:
        if entry.class_labels and max(entry.class_labels) >= num_classes:
            problems.append(f"{image_labels}: image {entry.image_id!r} has class ids "
                            f"{list(entry.class_labels)} beyond {num_classes - 1}")


def _find_bad_entries(entries: Sequence[Entry], num_classes: int, problems: List[str],
                      log) -> set:
    """Reads and checks every entry; returns the ids of the bad ones (their problems added)."""
    bad_ids = set()
    for k, entry in enumerate(entries):
        try:
            encode_entry(entry, num_classes)
        except records.RecordError as e:
            problems.append(str(e))
            bad_ids.add(entry.image_id)
        if (k + 1) % 500 == 0:
            log(f"checked {k + 1}/{len(entries)} images")
    return bad_ids


def _fail_or_skip(problems: Sequence[str], skip_bad: bool, log) -> None:
    """Raises listing the problems, or with `skip_bad` logs them as skipped.

    Raises:
      BuildError: there are problems and `skip_bad` is False (the first 50 are listed).
    """
    if problems and not skip_bad:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise BuildError(f"{len(problems)} problem(s) in the input files:\n  {shown}{more}\n"
                         "Fix them, or pass --skip_bad to leave these files out.")
    if problems:
        log(f"skipping {len(problems)} bad file(s) (--skip_bad):")
        for problem in problems:
            log(f"  {problem}")


def _write_records(output_dir: str, train_entries: Sequence[Entry],
                   val_entries: Sequence[Entry], num_classes: int, num_shards: int) -> None:
    """Writes `train-*` and `val-*` records (one shard per 1000 images unless `num_shards`)."""
    os.makedirs(output_dir, exist_ok=True)
    shards = num_shards or min(16, max(1, math.ceil(len(train_entries) / 1000)))
    for split, entries, n in (("train", train_entries, shards),
                              ("val", val_entries, max(1, math.ceil(len(val_entries) / 1000)))):
        if not entries:
            continue
        records.write_records(
            (encode_entry(e, num_classes) for e in entries), os.path.join(output_dir, split),
            max(1, min(n, len(entries))))


def _write_lists(output_dir: str, split_ids: Dict[str, Sequence[str]],
                 class_names: Sequence[str], skipped: Sequence[str]) -> None:
    """Writes the split files, `class_names.txt` and `skipped.txt` (removed when none)."""
    for name, ids in split_ids.items():
        splits.write_split_file(ids, os.path.join(output_dir, f"{name}.txt"))
    with open(os.path.join(output_dir, "class_names.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in class_names))
    skipped_path = os.path.join(output_dir, "skipped.txt")
    if skipped:
        with open(skipped_path, "w") as f:
            f.write("".join(f"{p}\n" for p in skipped))
    elif os.path.exists(skipped_path):
        os.remove(skipped_path)


def _write_dataset_info(output_dir: str, info: Dict) -> None:
    """Writes `dataset.json` atomically (a temporary file renamed into place)."""
    temp = os.path.join(output_dir, DATASET_INFO + ".tmp")
    with open(temp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(temp, os.path.join(output_dir, DATASET_INFO))


def _sources(images_dir: str, masks_dir: str, unlabelled_dir: Optional[str],
             image_labels: Optional[str]) -> Dict[str, Optional[str]]:
    """The absolute paths of the inputs, as `dataset.json` records them."""
    return {"images": os.path.abspath(images_dir), "masks": os.path.abspath(masks_dir),
            "unlabelled": unlabelled_dir and os.path.abspath(unlabelled_dir),
            "image_labels": image_labels and os.path.abspath(image_labels)}


def _split_and_write(masked: List[Entry], unmasked: List[Entry], output_dir: str,
                     num_classes: int, class_names: Optional[Sequence[str]],
                     val_fraction: float, seed: int, num_shards: int,
                     skipped: List[str]) -> Dict:
    """Holds out the validation images, writes every output file; returns `dataset.json`."""
    labelled_ids, val_ids = split_val([e.image_id for e in masked], val_fraction, seed)
    val_set = set(val_ids)
    train_entries = [e for e in masked if e.image_id not in val_set] + unmasked
    val_entries = [e for e in masked if e.image_id in val_set]
    _write_records(output_dir, train_entries, val_entries, num_classes, num_shards)
    unlabelled_ids = [e.image_id for e in unmasked]
    names = class_names or (["background"] + [f"class_{i}" for i in range(1, num_classes)])
    _write_lists(output_dir, {"labelled": labelled_ids, "unlabelled": unlabelled_ids,
                              "val": val_ids, "train": [e.image_id for e in train_entries]},
                 names, skipped)
    return {
        "num_classes": num_classes,
        "class_names": names,
        "labelled": len(labelled_ids),
        "unlabelled": len(unlabelled_ids),
        "image_labelled": sum(1 for e in unmasked if e.class_labels is not None),
        "val": len(val_ids),
        "val_fraction": val_fraction,
        "seed": seed,
        "skipped": skipped,
    }


def build(images_dir: str, masks_dir: str, output_dir: str, unlabelled_dir: Optional[str] = None,
          image_labels: Optional[str] = None, class_names_file: Optional[str] = None,
          num_classes: Optional[int] = None, val_fraction: float = 0.1, seed: int = 0,
          skip_bad: bool = False, mask_suffix: str = "", num_shards: int = 0,
          log=print) -> Dict:
    """Converts the folders; see the module docstring.

    Args:
      images_dir: images, some with masks.
      masks_dir: PNG masks, matched to images by file stem.
      output_dir: where the records, split files and `dataset.json` go.
      unlabelled_dir: optional images without masks.
      image_labels: optional CSV of image-level labels of unlabelled images.
      class_names_file: optional class names, one per line.
      num_classes: classes including background (default: from the class names, else the
        largest mask value + 1).
      val_fraction: fraction of the masked images held out for validation.
      seed: seed of the held-out draw.
      skip_bad: leave bad files out (listed) instead of failing.
      mask_suffix: stripped from mask stems before matching (`_mask`).
      num_shards: TFRecord files of the train split (0: one per 1000 images, at most 16).
      log: where progress and notes go.

    Returns:
      The contents of `dataset.json`.

    Raises:
      BuildError: listing every bad file (unless `skip_bad`).
      FileNotFoundError: a directory or file given does not exist.
    """
    class_names, num_classes = _class_names_and_count(class_names_file, num_classes)
    masked, unmasked, problems, notes = plan(images_dir, masks_dir, unlabelled_dir,
                                             image_labels, class_names, num_classes,
                                             mask_suffix)
    if num_classes is None:
        num_classes = _infer_num_classes(masked, problems)
        notes.append(f"{num_classes} classes (the largest mask value + 1; give --class_names "
                     "or --num_classes to fix it)")
    _check_image_label_ids(unmasked, num_classes, image_labels, problems)
    for note in notes:
        log(f"note: {note}")
    # Every file is read and checked before anything is written.
    bad_ids = _find_bad_entries(masked + unmasked, num_classes, problems, log)
    skipped = list(problems)
    _fail_or_skip(problems, skip_bad, log)
    masked = [e for e in masked if e.image_id not in bad_ids]
    unmasked = [e for e in unmasked if e.image_id not in bad_ids]
    if not masked:
        raise BuildError(f"no image of {images_dir} has a usable mask in {masks_dir} (masks "
                         "are matched by file stem; see --mask_suffix)")
    info = _split_and_write(masked, unmasked, output_dir, num_classes, class_names,
                            val_fraction, seed, num_shards, skipped)
    info["sources"] = _sources(images_dir, masks_dir, unlabelled_dir, image_labels)
    _write_dataset_info(output_dir, info)
    log(f"{output_dir}: {info['labelled']} labelled, {info['unlabelled']} unlabelled "
        f"({info['image_labelled']} with image labels), {info['val']} val images; "
        f"{num_classes} classes; {len(skipped)} skipped")
    return info


@gin.configurable
def folder_dataset_info(directory, key):
    """A value of `DIRECTORY/dataset.json`, written by `datasets/build_folder.py` (gin helper).

    `NUM_CLASSES = @num_classes/folder_dataset_info()` with
    `num_classes/folder_dataset_info.key = 'num_classes'` (see own_semi.gin).

    Args:
      directory: the `--output_dir` of `build_folder.py`.
      key: `num_classes`, `class_names`, ... (lists are returned as tuples).

    Raises:
      FileNotFoundError: no `dataset.json` in `directory` (says how to make one).
      KeyError: `key` is not in it.
    """
    path = os.path.join(directory, DATASET_INFO)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: OWN_DIR={directory!r} must be the --output_dir of "
            "`python datasets/build_folder.py`")
    with open(path) as f:
        info = json.load(f)
    if key not in info:
        raise KeyError(f"{path} has no {key!r}; it has {sorted(info)}")
    value = info[key]
    return tuple(value) if isinstance(value, list) else value


__all__ = ["BuildError", "Entry", "build", "encode_entry", "folder_dataset_info",
           "list_images", "read_class_names", "read_image", "read_image_labels", "read_mask",
           "split_val"]
