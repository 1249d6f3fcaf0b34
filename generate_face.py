"""Face pictures in, NumPy batches out.

Lists and reads face photographs, centre-crops and resizes them the way the
DCGAN face tutorials did, keeps them in a preprocessed cache, hands out
shuffled batches and z vectors from the run's seed, and writes images and
image grids. (demo_faces.py paints the synthetic faces a fresh clone trains
on.)

This file knows nothing about TensorFlow, so the loader is usable (and
testable) without building a graph.

    python generate_face.py --preview crops.png --data_root ~/celeba/img_align_celeba
    python generate_face.py --build_cache --data_root ~/celeba/img_align_celeba
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cli_flags import flag_bool

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Pillow widens the bicubic kernel when it shrinks an image, so this is an
# anti-aliased downscale (unlike the nearest-neighbour scipy.misc default the
# old tutorials inherited). Changing it changes every pixel the model sees.
RESAMPLE = Image.Resampling.BICUBIC

# Independent random streams derived from one run seed: numpy's SeedSequence
# turns [seed, stream, index] into unrelated generators, so the data order of
# epoch 7 or the z of step 1234 can be recomputed without replaying the run.
STREAM_SHUFFLE = 0
STREAM_TRAIN_Z = 1
STREAM_SAMPLE_Z = 2
STREAM_FLIP = 3
# Other modules number their own streams, apart from these and each other:
# 4 complete_face.py (masks), 5 train_gan.py (the watchdog's real faces),
# 10-14 metrics.py (the evaluation). A new stream takes an unused number.


class BadImageError(ValueError):
    """A file that cannot be used as a training face (the message says why)."""


def list_image_files(data_root):
    """All image files under `data_root`, recursively, in a stable order.

    Args:
      data_root: folder to search; symbolic links to folders are not
        followed, so a link loop cannot hang the listing.

    Returns:
      list of str paths with extension .jpg, .jpeg or .png (any case),
      sorted by path relative to `data_root`.

    Raises:
      FileNotFoundError: the folder does not exist or holds no such file.
    """
    root = Path(data_root)
    looked_for = ", ".join("*" + ext for ext in IMAGE_EXTENSIONS)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; pass --data_root with a folder "
            f"of face images ({looked_for}), or make the demo data with "
            f"`python demo_faces.py {root}`")
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders.sort()
        for name in names:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(folder, name))
    if not found:
        raise FileNotFoundError(
            f"no images in {root} (looked for {looked_for}, any case, in all "
            f"subfolders); pass --data_root with a folder of face images")
    found.sort(key=lambda path: os.path.relpath(path, root))
    return found


def crop_box(width, height, crop_h, crop_w):
    """The centre-crop window (left, top, right, bottom) for an image size.

    The offsets are floor((size - crop) / 2): for CelebA's 178 x 218 and the
    default 108 x 108 crop that is left 35, top 55.
    """
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return (left, top, left + crop_w, top + crop_h)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a source picture becomes a training image."""
    crop_h: int = 108       # centre-crop height in source pixels
    crop_w: int = 108       # centre-crop width in source pixels
    resize_h: int = 64      # output height in pixels
    resize_w: int = 64      # output width in pixels
    is_crop: bool = True    # crop before resizing; False resizes the whole picture


def preprocess_image(image, prep=Preprocessing()):
    """Centre-crop, resize and convert one PIL image to RGB uint8.

    Args:
      image: a PIL image of any mode (grayscale, palette, RGBA, CMYK, ...).
      prep: Preprocessing settings.

    Returns:
      uint8 array [prep.resize_h, prep.resize_w, 3].

    Raises:
      BadImageError: the image is smaller than the crop.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit grayscale: Pillow's own conversion clips at 255, so
        # mid-grey would become white. Keep the top 8 bits instead.
        wide = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray(np.clip(wide >> 8, 0, 255).astype(np.uint8), "L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    if prep.is_crop:
        if width < prep.crop_w or height < prep.crop_h:
            raise BadImageError(
                f"{width}x{height} pixels is smaller than the "
                f"{prep.crop_w}x{prep.crop_h} crop")
        image = image.crop(crop_box(width, height, prep.crop_h, prep.crop_w))
    # Crop first: resize(box=...) would let the filter reach pixels outside
    # the window, and the crop is meant to drop them.
    resized = image.resize((prep.resize_w, prep.resize_h), RESAMPLE)
    return np.asarray(resized, dtype=np.uint8)


def load_face(path, prep=Preprocessing()):
    """Read one file and preprocess it (see `preprocess_image`).

    Raises:
      BadImageError: the file is unreadable, not an image, corrupt,
        truncated, or smaller than the crop.
    """
    try:
        with warnings.catch_warnings():
            # Pillow only warns about images past its pixel limit (below
            # twice the limit); they are refused like the larger ones.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decode now, so a truncated file fails here
                return preprocess_image(image, prep)
    except BadImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        # Pillow reports bad files through this whole family (OSError for
        # truncated or unidentified data, SyntaxError and ValueError from
        # some format parsers).
        raise BadImageError(f"cannot decode: {error}") from error


def _decode_chunk(job):
    """Worker: decode a chunk of files. Returns (images of the good ones, bad)."""
    paths, prep = job
    good, bad = [], []
    for i, path in enumerate(paths):
        try:
            good.append(load_face(path, prep))
        except BadImageError as error:
            bad.append((i, str(error)))
    shape = (0, prep.resize_h, prep.resize_w, 3)
    return (np.stack(good) if good else np.empty(shape, np.uint8)), bad


DECODE_CHUNK = 256  # files per worker task: large enough to amortise the IPC


def decode_workers():
    """Processes for decoding: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _chunk_results(paths, prep, workers):
    """(chunk start, images, bad) per chunk of paths, in order, decoded in parallel."""
    jobs = [(paths[i:i + DECODE_CHUNK], prep) for i in range(0, len(paths), DECODE_CHUNK)]
    starts = range(0, len(paths), DECODE_CHUNK)
    if workers <= 1 or len(jobs) <= 1:
        yield from ((start, *_decode_chunk(job)) for start, job in zip(starts, jobs))
        return
    # Threads do not scale here (Pillow's per-image Python work holds the
    # GIL), so decode in processes. Fork where the platform has it: the
    # workers only run Pillow and NumPy, and a spawned worker would re-import
    # the calling script (TensorFlow and all) first.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for start, (images, bad) in zip(starts, pool.imap(_decode_chunk, jobs)):
            yield start, images, bad


def decode_into(paths, prep, out, workers=None, log=print):
    """Decode `paths` into the rows of `out`, good images first, in order.

    Args:
      paths: image files.
      prep: Preprocessing settings.
      out: uint8 array [len(paths), resize_h, resize_w, 3] (or a memmap).
      workers: decoding processes (default: every core this process may use).
      log: a print-like function for progress (count, rate, time left).

    Returns:
      (kept, skipped): the paths stored in out[:len(kept)], and (path, reason)
      for each file left out.
    """
    workers = decode_workers() if workers is None else workers
    kept, skipped = [], []
    started = last_report = time.monotonic()
    for start, images, bad in _chunk_results(paths, prep, workers):
        chunk = paths[start:start + DECODE_CHUNK]
        out[len(kept):len(kept) + len(images)] = images
        bad_index = {i for i, _ in bad}
        kept.extend(path for i, path in enumerate(chunk) if i not in bad_index)
        skipped.extend((chunk[i], reason) for i, reason in bad)
        done = start + len(chunk)
        now = time.monotonic()
        if now - last_report > 5 and done < len(paths):
            rate = done / (now - started)
            log(f"  preprocessed {done}/{len(paths)} images "
                f"({rate:.0f}/s, {(len(paths) - done) / rate:.0f}s left)")
            last_report = now
    return kept, skipped


def printable(path):
    """A path as text that any output accepts: bytes of a file name that are
    not valid UTF-8 (kept by Python as surrogates) are shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def report_skipped(skipped, total, log=print):
    """Say how many files were left out, and name them (the first 20)."""
    if not skipped:
        return
    log(f"warning: skipped {len(skipped)} of {total} files that are not usable faces:")
    for path, reason in skipped[:20]:
        log(f"  {printable(path)}: {reason}")
    if len(skipped) > 20:
        log(f"  ... and {len(skipped) - 20} more")


def load_faces(paths, prep=Preprocessing(), workers=None, log=print):
    """Decode and preprocess every file once, in memory; skip and report bad ones.

    Args:
      paths: image files, e.g. from `list_image_files`.
      prep: Preprocessing settings.
      workers: decoding processes (see `decode_into`).
      log: where progress and the skip report go (a print-like function).

    Returns:
      (images, kept, skipped): images is uint8 [N, resize_h, resize_w, 3] for
      the N usable files in `kept` (same order as `paths`); skipped is a list
      of (path, reason) for the files left out.
    """
    images = np.empty((len(paths), prep.resize_h, prep.resize_w, 3), np.uint8)
    kept, skipped = decode_into(paths, prep, images, workers, log)
    report_skipped(skipped, len(paths), log)
    return images[:len(kept)], kept, skipped


CACHE_FORMAT = 2  # bump when the cache layout or the preprocessing code changes


class FaceCache:
    """The preprocessed images of one data folder, memory-mapped from disk.

    Two files per data folder in `cache_dir`: `<name>-<hash>.npy`, uint8
    [N, H, W, 3] with the usable images first, and `<name>-<hash>.json`, the
    manifest: source folder, every file's relative path, size and mtime, the
    preprocessing settings, the format version, the usable count and the
    skipped files with their reasons. The manifest is written last, after
    the array is complete and renamed into place, so a build that is killed
    leaves no manifest and is never used.
    """

    def __init__(self, cache_dir, data_root):
        self.root = Path(data_root).resolve()
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        stem = f"{self.root.name or 'root'}-{tag}"
        self.array_path = Path(cache_dir) / f"{stem}.npy"
        self.manifest_path = Path(cache_dir) / f"{stem}.json"

    def _fingerprint(self, files):
        rows = []
        for path in files:
            try:
                info = os.stat(path)
                rows.append([os.path.relpath(path, self.root), info.st_size, info.st_mtime_ns])
            except OSError:  # e.g. a dangling link: decoding will skip it too
                rows.append([os.path.relpath(path, self.root), -1, -1])
        return rows

    def _manifest(self):
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None

    def stale_reason(self, files, prep):
        """Why the cache cannot serve `files` with `prep`; None if it can."""
        manifest = self._manifest()
        if manifest is None:
            return ("no cache yet" if not self.manifest_path.exists()
                    else "its manifest is unreadable")
        if manifest.get("format") != CACHE_FORMAT:
            return f"cache format {manifest.get('format')} is out of date"
        settings = dataclasses.asdict(prep)
        changed = [f"{name} {manifest['settings'].get(name)} -> {value}"
                   for name, value in settings.items()
                   if manifest["settings"].get(name) != value]
        if changed:
            return "the preprocessing changed: " + ", ".join(changed)
        old = {row[0]: tuple(row[1:]) for row in manifest["files"]}
        new = {row[0]: tuple(row[1:]) for row in self._fingerprint(files)}
        added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
        modified = sum(old[name] != new[name] for name in new.keys() & old.keys())
        if added or removed or modified:
            return (f"the folder changed: {added} file(s) added, {removed} removed, "
                    f"{modified} modified")
        try:
            array = np.load(self.array_path, mmap_mode="r")
        except (OSError, ValueError):
            return "its image file is missing or damaged"
        if array.shape != (len(files), prep.resize_h, prep.resize_w, 3):
            return "its image file does not match the manifest"
        return None

    def load(self):
        """(images memmap [N, H, W, 3], kept paths, skipped (path, reason))."""
        manifest = self._manifest()
        images = np.load(self.array_path, mmap_mode="r")[:manifest["count"]]
        skipped = [(str(self.root / name), reason) for name, reason in manifest["skipped"]]
        bad = {name for name, _ in manifest["skipped"]}
        kept = [str(self.root / row[0]) for row in manifest["files"] if row[0] not in bad]
        return images, kept, skipped

    def build(self, files, prep, workers=None, log=print):
        """Decode `files` into the cache (see the class docstring); then `load`."""
        self.array_path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        for leftover in leftovers_of(self.array_path) + leftovers_of(self.manifest_path):
            leftover.unlink(missing_ok=True)  # from a build that was killed
        fingerprint = self._fingerprint(files)
        started = time.monotonic()
        with atomic_path(self.array_path) as partial:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                            shape=(len(files), prep.resize_h, prep.resize_w, 3))
            kept, skipped = decode_into(files, prep, out, workers, log)
            out.flush()
            del out
        manifest = {
            "format": CACHE_FORMAT,
            "source": str(self.root),
            "settings": dataclasses.asdict(prep),
            "count": len(kept),
            "skipped": [[os.path.relpath(path, self.root), reason] for path, reason in skipped],
            "files": fingerprint,
        }
        with atomic_path(self.manifest_path) as partial:
            partial.write_text(json.dumps(manifest))
        elapsed = time.monotonic() - started
        log(f"cached {len(kept)} images in {elapsed:.1f}s "
            f"({len(files) / max(elapsed, 1e-9):.0f} images/s) at {printable(self.array_path)}")
        return self.load()


def load_dataset(data_root, prep=Preprocessing(), cache_dir=None, workers=None, log=print):
    """Every usable image of a folder, preprocessed; through the cache if given.

    Args:
      data_root: folder of face images (see `list_image_files`).
      prep: Preprocessing settings.
      cache_dir: folder of the preprocessed-image cache, or None to decode
        into memory without one.
      workers: decoding processes (see `decode_into`).
      log: a print-like function for progress and the skip report.

    Returns:
      (images, kept, skipped) as in `load_faces`; images is a read-only
      memory map when it comes from the cache.
    """
    files = list_image_files(data_root)
    if not cache_dir:
        log(f"preprocessing {len(files)} images from {printable(data_root)}")
        return load_faces(files, prep, workers, log)
    cache = FaceCache(cache_dir, data_root)
    reason = cache.stale_reason(files, prep)
    if reason is None:
        images, kept, skipped = cache.load()
        log(f"using cached images {printable(cache.array_path)} "
            f"({len(kept)} of {len(files)} files)")
    else:
        log(f"preprocessing {len(files)} images from {printable(data_root)} into the cache "
            f"({reason})")
        images, kept, skipped = cache.build(files, prep, workers, log)
    report_skipped(skipped, len(files), log)
    return images, kept, skipped


def sample_faces(folder, prep, count, rng, log=print):
    """Up to `count` faces of a folder, picked in a random order.

    Only the files picked are decoded, so a folder as large as CelebA is
    quick to sample from; bad files are skipped and reported.

    Args:
      prep: Preprocessing, or None for the files as they are, at the size
        of the first one picked (see `as_files`).
      rng: a numpy Generator, which picks the files.

    Returns:
      uint8 [R, H, W, 3], R >= 2.
    """
    paths = list_image_files(folder)
    order = rng.permutation(len(paths))
    picked = [paths[i] for i in order[:count]]
    prep = prep or as_files(picked[0], folder)
    log(f"real faces: {len(picked)} of the {len(paths)} in {printable(folder)}"
        + ("" if prep.is_crop else f", {prep.resize_w}x{prep.resize_h}"))
    return load_usable(picked, prep, folder, log)


def load_usable(paths, prep, folder, log=print):
    """Decode and preprocess `paths` (bad files skipped and reported); at least 2."""
    images, kept, _ = load_faces(paths, prep, log=log)
    if len(kept) < 2:
        raise ValueError(f"fewer than 2 usable images in {printable(folder)}")
    return images


def as_files(first_path, source):
    """The Preprocessing that keeps images as their files are: no crop, and
    the size of `first_path` (an image of another size is resized to it).

    source: the folder or flag it came from, for the error message.
    """
    try:
        with Image.open(first_path) as first:
            width, height = first.size
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read {printable(first_path)}, the first image of "
                         f"{printable(source)}: {error}") from error
    return Preprocessing(resize_h=height, resize_w=width, is_crop=False)


def to_unit_range(images):
    """uint8 pixels [0, 255] -> float32 in [-1, 1] (pixel / 127.5 - 1)."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images):
    """float images in [-1, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def run_rng(seed, stream, index=0):
    """The numpy Generator for one random stream of a run (see STREAM_FLIP's note)."""
    return np.random.default_rng([seed, stream, index])


def sample_z(rng, num, z_dim):
    """z vectors: float32 [num, z_dim], uniform in [-1, 1)."""
    return rng.uniform(-1.0, 1.0, size=(num, z_dim)).astype(np.float32)


def train_z(seed, step, batch_size, z_dim):
    """The z batch of training step `step`, the same whenever it is asked for."""
    return sample_z(run_rng(seed, STREAM_TRAIN_Z, step), batch_size, z_dim)


def sample_grid_z(seed, num, z_dim):
    """The z behind sample pictures: a run's fixed training grid, and
    predict_gan.py's faces (so --seed <run seed> redraws the run's grid)."""
    return sample_z(run_rng(seed, STREAM_SAMPLE_Z), num, z_dim)


class BatchStream:
    """An endless stream of image batches, epoch after epoch.

    Epoch e visits every image exactly once, in the order of a permutation
    seeded by (seed, e). Batches run straight across epoch boundaries, so
    every batch is full and no image is dropped. The position in the stream
    is a function of the number of batches drawn, so a run resumed at step s
    continues the data order exactly with `start_batch=s`.
    """

    def __init__(self, images, batch_size, seed, start_batch=0, flip=False, part=slice(None)):
        """
        Args:
          images: array [N, H, W, C]; N must be at least batch_size.
          batch_size: images per batch.
          seed: the run seed.
          start_batch: how many batches the run has already consumed.
          flip: mirror a random half of each batch left-right (augmentation;
            which ones depends only on the seed and the batch number).
          part: the slice of every batch to return (one worker's rows of a
            global batch); the order and the mirroring stay the whole batch's.
        """
        if len(images) < batch_size:
            raise ValueError(
                f"only {len(images)} usable images, fewer than one batch of "
                f"{batch_size}; add images or lower --batch_size")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.flip = flip
        self.part = part
        self.batch_number = start_batch
        self.epoch, self.index = divmod(start_batch * batch_size, len(images))
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch):
        return run_rng(self.seed, STREAM_SHUFFLE, epoch).permutation(len(self.images))

    def next_indices(self):
        """Indices (into `images`) of the next batch; advances the stream."""
        parts, needed = [], self.batch_size
        while needed:
            take = self._order[self.index:self.index + needed]
            parts.append(take)
            needed -= len(take)
            self.index += len(take)
            if self.index == len(self.images):
                self.epoch += 1
                self.index = 0
                self._order = self._permutation(self.epoch)
        return np.concatenate(parts)

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.images[self.next_indices()[self.part]]  # a copy, even from a memmap
        if self.flip:
            coins = run_rng(self.seed, STREAM_FLIP, self.batch_number).random(self.batch_size)
            mirror = coins[self.part] < 0.5
            # One channel at a time: numpy copies a reversed view of whole
            # pixels in runs of 3 values, each channel's in runs of a row
            # (64 faces of 64x64: 0.16 against 0.65 ms; the stream shares
            # the CPU with the training step).
            chosen = batch[mirror]
            for channel in range(batch.shape[-1]):
                batch[mirror, :, :, channel] = chosen[:, :, ::-1, channel]
        self.batch_number += 1
        return batch


def grid_shape(num):
    """(rows, columns) of the grid for `num` images: rows = floor(sqrt(num))."""
    rows = max(1, math.isqrt(num))
    return rows, math.ceil(num / rows)


def image_grid(images, cols=None):
    """Tile images [N, H, W, C] in [-1, 1] into one uint8 picture.

    Args:
      cols: cells per row; default from `grid_shape`.

    Returns uint8 [rows * H, cols * W, C]; cells past N stay black.
    """
    images = to_uint8(images)
    num, height, width, channels = images.shape
    rows, cols = grid_shape(num) if cols is None else (math.ceil(num / cols), cols)
    grid = np.zeros((rows * height, cols * width, channels), np.uint8)
    for i in range(num):
        row, col = divmod(i, cols)
        grid[row * height:(row + 1) * height, col * width:(col + 1) * width] = images[i]
    return grid


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside `path` that becomes `path` when the block succeeds.

    Every file (or folder) the project writes goes through here, so an
    interrupted write never leaves a half-written file under its real name,
    and a failed one leaves nothing behind.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield temporary
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def leftovers_of(path):
    """Temporary files of `atomic_path(path)` left by killed processes.

    Not those of a process of this machine that is still running: two
    workers of one run may build the same cache at the same time.
    """
    path = Path(path)
    found = []
    for candidate in path.parent.glob(f".{path.name}.tmp*"):
        owner = candidate.name.rsplit(".tmp", 1)[1]
        if not (owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner))):
            found.append(candidate)
    return found


def process_alive(pid):
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_save_image(pixels, path, **save_options):
    """Write a uint8 array (or a list of them: an animation) as an image file.

    The picture goes to a temporary name in the same folder first, then
    replaces `path`, so an interrupted write never leaves a half-written
    file under `path`.
    """
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(frame) for frame in (
        pixels if isinstance(pixels, (list, tuple)) else [pixels])]
    if len(frames) > 1:
        save_options = dict(save_all=True, append_images=frames[1:], **save_options)
    try:
        image_format = Image.registered_extensions()[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: unknown picture type {path.suffix!r}; use .png, .jpg "
                         f"or .gif") from None
    with atomic_path(path) as temporary:
        frames[0].save(temporary, format=image_format, **save_options)
    return path


def save_grid(images, path, cols=None):
    """Save images [N, H, W, 3] in [-1, 1] as one grid PNG (see `image_grid`)."""
    return atomic_save_image(image_grid(images, cols), path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--preview", metavar="OUT.png",
                        help="write a grid of preprocessed faces from --data_root")
    action.add_argument("--build_cache", action="store_true",
                        help="preprocess --data_root into --cache_dir now (training "
                             "does it on its first run otherwise)")
    parser.add_argument("--cache_dir", default="cache",
                        help="folder of the preprocessed-image cache (--build_cache)")
    parser.add_argument("--num", type=int, default=64, help="faces to show (--preview)")
    parser.add_argument("--data_root", default="data/demo_faces",
                        help="folder of face images for --preview")
    parser.add_argument("--crop_h", type=int, default=108, help="centre-crop height")
    parser.add_argument("--crop_w", type=int, default=108, help="centre-crop width")
    parser.add_argument("--is_crop", type=flag_bool, default=True,
                        help="centre-crop before resizing (true/false)")
    parser.add_argument("--resize_h", type=int, default=64, help="output height")
    parser.add_argument("--resize_w", type=int, default=64, help="output width")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    prep = Preprocessing(args.crop_h, args.crop_w, args.resize_h, args.resize_w, args.is_crop)
    try:
        if args.build_cache:
            load_dataset(args.data_root, prep, args.cache_dir)
            return 0
        files = list_image_files(args.data_root)[:args.num]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    images, kept, _ = load_faces(files, prep)
    if not kept:
        print(f"error: none of the first {len(files)} files in {args.data_root} is usable",
              file=sys.stderr)
        return 1
    save_grid(to_unit_range(images), args.preview)
    print(f"wrote {args.preview}: {len(kept)} preprocessed faces from {args.data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
