"""Measure how close a generator's faces are to real ones, offline.

    python evaluate_gan.py --ckpt_dir ckpt --real_dir data/heldout_faces
    python evaluate_gan.py --fake_dir my_faces --real_dir data/heldout_faces --json

Metrics:
  SWD  sliced Wasserstein distance between 7x7 neighbourhoods of the
       Laplacian pyramids of both sets, as defined for Progressive GAN
       (Karras et al. 2018), x1000 per level. Needs no download. Reported
       with the same distance between two disjoint halves of the real set,
       the noise floor that a perfect generator would reach.
  FID  Frechet distance of Inception features (Heusel et al. 2017), when
       --inception_weights names the standard frozen Inception graph.
  diversity  mean distance between two generated faces against the same
       among real faces; a ratio far below 1 means mode collapse.

Real images go through the preprocessing the run was trained with (the
same crop and resize); generated ones are quantised to 8 bits, as they
would be in a PNG.
"""

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import scipy.linalg
import scipy.ndimage
from PIL import Image

import generate_face
from cli_flags import add_flags, below, flag_field, from_flags, misplaced

# Sliced Wasserstein distance settings of Progressive GAN.
PATCH_SIZE = 7            # neighbourhoods are PATCH_SIZE x PATCH_SIZE x 3
PATCHES_PER_IMAGE = 128   # per image and pyramid level
DIRECTION_REPEATS = 4     # rounds of random projections ...
DIRECTIONS_PER_REPEAT = 128  # ... of this many unit directions each
SMALLEST_LEVEL = 16       # the pyramid stops at 16 px
BINOMIAL_5 = np.array([1, 4, 6, 4, 1], np.float32) / 16  # separable 5x5 binomial

# Generated faces less varied than this fraction of the real faces are
# flagged as a possible mode collapse.
COLLAPSE_RATIO = generate_face.COLLAPSE_RATIO

# The standard FID network: the frozen Inception graph of TensorFlow's
# inception-2015-12-05 release, classify_image_graph_def.pb.
INCEPTION_INPUT = "ExpandDims:0"  # float [N, H, W, 3], pixels in [0, 255]
INCEPTION_FEATURES = "pool_3:0"   # [N, 1, 1, 2048]


# ---------------------------------------------------------------------------
# Sliced Wasserstein distance
# ---------------------------------------------------------------------------

def _blur(images, gain=1.0):
    """The 5x5 binomial filter over H and W of [N, H, W, C] (mirrored edges)."""
    kernel = BINOMIAL_5 * gain
    images = scipy.ndimage.convolve1d(images, kernel, axis=1, mode="mirror")
    return scipy.ndimage.convolve1d(images, kernel, axis=2, mode="mirror")


def pyramid_down(images):
    """Blur, then keep every second row and column: [N, H, W, C] -> [N, H/2, W/2, C]."""
    return _blur(images)[:, ::2, ::2]


def pyramid_up(images):
    """Insert zeros between pixels, then blur with 4x gain: -> [N, 2H, 2W, C]."""
    n, height, width, channels = images.shape
    spread = np.zeros((n, 2 * height, 2 * width, channels), np.float32)
    spread[:, ::2, ::2] = images
    return _blur(spread, gain=2.0)  # 2x per axis: 4x over the image


def laplacian_pyramid(images, levels):
    """[N, H, W, C] float32 -> list of `levels` arrays, finest first.

    Each level but the last holds the detail lost by halving the resolution;
    the last is the blurred, downsampled image itself.
    """
    pyramid = [images.astype(np.float32)]
    for _ in range(levels - 1):
        pyramid.append(pyramid_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyramid_up(pyramid[-1])
    return pyramid


def pyramid_resolutions(height, width):
    """Level sizes for images of this size: 64 -> [64, 32, 16]."""
    levels = max(1, int(math.log2(min(height, width) // SMALLEST_LEVEL)) + 1)
    return [min(height, width) >> level for level in range(levels)]


def patch_descriptors(images, seed, chunk=256):
    """Random 7x7 neighbourhoods of every pyramid level of `images`.

    Args:
      images: uint8 [N, H, W, 3].
      seed: picks the neighbourhoods' positions.

    Returns:
      {resolution: float32 [N * PATCHES_PER_IMAGE, 7, 7, 3]}, not normalised.
    """
    n, height, width, _ = images.shape
    resolutions = pyramid_resolutions(height, width)
    rng = generate_face.run_rng(seed, generate_face.STREAM_PATCHES)
    out = {r: np.empty((n * PATCHES_PER_IMAGE, PATCH_SIZE, PATCH_SIZE, 3), np.float32)
           for r in resolutions}
    for start in range(0, n, chunk):
        batch = images[start:start + chunk]
        rows = slice(start * PATCHES_PER_IMAGE, (start + len(batch)) * PATCHES_PER_IMAGE)
        for level in laplacian_pyramid(batch, len(resolutions)):
            count, level_h, level_w, _ = level.shape
            top = rng.integers(0, level_h - PATCH_SIZE + 1, (count, PATCHES_PER_IMAGE))
            left = rng.integers(0, level_w - PATCH_SIZE + 1, (count, PATCHES_PER_IMAGE))
            # [count, H - 6, W - 6, 3, 7, 7]: every neighbourhood, as a view
            windows = np.lib.stride_tricks.sliding_window_view(
                level, (PATCH_SIZE, PATCH_SIZE), axis=(1, 2))
            picked = windows[np.arange(count)[:, None], top, left]  # [count, P, 3, 7, 7]
            out[min(level_h, level_w)][rows] = picked.transpose(0, 1, 3, 4, 2).reshape(
                -1, PATCH_SIZE, PATCH_SIZE, 3)
    return out


class NormalisedDescriptors:
    """Descriptors normalised per channel over the whole set, lazily.

    Progressive GAN normalises each channel to zero mean and unit variance
    over all descriptors of a set; here the normalisation is folded into the
    projection directions rather than applied to a copy of the descriptors.

    Args:
      descriptors: float32 [M, 7, 7, 3].
    """

    def __init__(self, descriptors):
        self.flat = descriptors.reshape(len(descriptors), -1)  # [M, 147]
        channels = descriptors.reshape(-1, 3)
        mean = channels.sum(axis=0, dtype=np.float64) / len(channels)
        square = np.einsum("ij,ij->j", channels, channels, dtype=np.float64) / len(channels)
        std = np.sqrt(np.maximum(square - mean ** 2, 1e-16))
        # A flattened descriptor runs (row, column, channel): channel = index % 3.
        self.scale = np.tile(1.0 / std, PATCH_SIZE * PATCH_SIZE)
        self.shift = np.tile(mean / std, PATCH_SIZE * PATCH_SIZE)
        self._projected = None  # reused output buffer

    def sorted_projections(self, directions):
        """float64 [147, K] unit directions -> float32 [K, M], each row sorted.

        The result is overwritten by the next call.
        """
        scaled = (directions * self.scale[:, None]).astype(np.float32)
        offset = (self.shift @ directions).astype(np.float32)
        shape = (directions.shape[1], len(self.flat))
        if self._projected is None or self._projected.shape != shape:
            self._projected = np.empty(shape, np.float32)
        # Written straight in [K, M] layout: each row is then sorted in place.
        np.matmul(scaled.T, self.flat.T, out=self._projected)
        self._projected -= offset[:, None]
        self._projected.sort(axis=1)
        return self._projected


def random_directions(seed, dimensions):
    """DIRECTION_REPEATS arrays of DIRECTIONS_PER_REPEAT random unit vectors."""
    rng = generate_face.run_rng(seed, generate_face.STREAM_DIRECTIONS)
    rounds = []
    for _ in range(DIRECTION_REPEATS):
        directions = rng.standard_normal((dimensions, DIRECTIONS_PER_REPEAT))
        rounds.append(directions / np.sqrt(np.sum(directions ** 2, axis=0, keepdims=True)))
    return rounds


def sliced_wasserstein(descriptors_a, descriptors_b, seed):
    """Mean over random unit directions of the 1-D Wasserstein distance.

    Args:
      descriptors_a, descriptors_b: float32 [M, 7, 7, 3], the same M.

    Returns:
      float, the mean absolute difference of the sorted projections,
      averaged over DIRECTION_REPEATS rounds of directions.
    """
    if descriptors_a.shape != descriptors_b.shape:
        raise ValueError(f"descriptor sets differ in shape: {descriptors_a.shape} vs "
                         f"{descriptors_b.shape}")
    set_a = NormalisedDescriptors(descriptors_a)
    set_b = NormalisedDescriptors(descriptors_b)
    distances = []
    for directions in random_directions(seed, PATCH_SIZE * PATCH_SIZE * 3):
        difference = set_a.sorted_projections(directions)
        difference -= set_b.sorted_projections(directions)
        distances.append(np.mean(np.abs(difference, out=difference), dtype=np.float64))
    return float(np.mean(distances))


def swd(images_a, images_b, seed=0):
    """Sliced Wasserstein distance x1000 per pyramid level, and their mean.

    Args:
      images_a, images_b: uint8 [N, H, W, 3], the same N and size.
      seed: picks the neighbourhoods and the projection directions; the
        same seed gives the same numbers. Both sets take their
        neighbourhoods at the same positions (image i of each set at the
        same places), so two identical sets are at distance 0.

    Returns:
      {"64": .., "32": .., "16": .., "avg": ..} for 64x64 images.
    """
    if images_a.shape != images_b.shape:
        raise ValueError(f"image sets differ in shape: {images_a.shape} vs {images_b.shape}")
    descriptors_a = patch_descriptors(images_a, seed)
    descriptors_b = patch_descriptors(images_b, seed)
    result = {str(resolution): 1e3 * sliced_wasserstein(descriptors_a[resolution],
                                                        descriptors_b[resolution], seed)
              for resolution in descriptors_a}
    result["avg"] = float(np.mean(list(result.values())))
    return result


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------

def feature_statistics(features):
    """Mean [D] and covariance [D, D] of features [N, D] (float64)."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_a, cov_a, mean_b, cov_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), two Gaussians' distance."""
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        # A singular product (fewer images than feature dimensions): the
        # usual remedy is a small ridge on both covariances.
        ridge = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    root = np.real(root)  # rounding leaves a tiny imaginary part
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * np.trace(root))


class InceptionFeatures:
    """Features of a frozen TensorFlow graph, e.g. the standard FID Inception.

    Args:
      path: a binary GraphDef (.pb) file.
      input_name, output_name: its input tensor (float [N, H, W, 3], pixels
        0-255) and feature tensor ([N, ..., D]).
    """

    def __init__(self, path, input_name=INCEPTION_INPUT, output_name=INCEPTION_FEATURES):
        import tensorflow as tf  # only FID needs TensorFlow here
        tf1 = tf.compat.v1
        graph_def = tf1.GraphDef()
        try:
            graph_def.ParseFromString(Path(path).read_bytes())
        except Exception as error:  # protobuf's DecodeError has no stable import path
            raise ValueError(f"--inception_weights {path} is not a frozen TensorFlow graph "
                             f"(.pb): {error}") from error
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.float32, [None, None, None, 3])
            try:
                (features,) = tf1.import_graph_def(
                    graph_def, input_map={input_name: self.images},
                    return_elements=[output_name], name="inception")
            except (ValueError, KeyError) as error:
                raise ValueError(f"--inception_weights {path} lacks the tensors "
                                 f"{input_name} and {output_name}: {error}") from error
            self.features = tf.reshape(features, [tf.shape(features)[0], -1])
        self.session = tf1.Session(graph=self.graph, config=hardware.session_config())

    def __call__(self, images, batch=100):
        """uint8 [N, H, W, 3] -> float64 features [N, D]."""
        parts = [self.session.run(self.features,
                                  {self.images: images[i:i + batch].astype(np.float32)})
                 for i in range(0, len(images), batch)]
        return np.concatenate(parts).astype(np.float64)


def fid(features, images_a, images_b):
    """FID between two uint8 image sets, through a feature function."""
    return frechet_distance(*feature_statistics(features(images_a)),
                            *feature_statistics(features(images_b)))


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def load_real(folder, prep, num, seed, log):
    """Up to 2 x num real faces of a folder, in a seeded random order.

    Only the files needed are decoded, so a folder as large as CelebA is
    quick to sample from.

    Returns:
      uint8 [R, H, W, 3].
    """
    paths = generate_face.list_image_files(folder)
    rng = generate_face.run_rng(seed, generate_face.STREAM_PICK_REAL)
    order = rng.permutation(len(paths))
    picked = [paths[i] for i in order[:2 * num]]
    log(f"real faces: {len(picked)} of the {len(paths)} in "
        f"{generate_face.printable(folder)}")
    return load_usable(picked, prep, folder, log)


def load_usable(paths, prep, folder, log):
    """Decode and preprocess `paths` (bad files skipped and reported); at least 2."""
    images, kept, _ = generate_face.load_faces(paths, prep, log=log)
    if len(kept) < 2:
        raise ValueError(f"fewer than 2 usable images in {generate_face.printable(folder)}")
    return images


def load_generated(folder, num, log):
    """Up to `num` images of a folder of generated faces, in file order.

    They are used at the size of the first one (others are resized to it).

    Returns:
      uint8 [N, H, W, 3].
    """
    paths = generate_face.list_image_files(folder)[:num]
    try:
        with Image.open(paths[0]) as first:
            width, height = first.size
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read {generate_face.printable(paths[0])}, the first image "
                         f"of --fake_dir: {error}") from error
    prep = generate_face.Preprocessing(resize_h=height, resize_w=width, is_crop=False)
    log(f"generated faces: {len(paths)} from {generate_face.printable(folder)}, "
        f"{width}x{height}")
    return load_usable(paths, prep, folder, log)


def generate_faces(generator, num, seed):
    """`num` faces from a gan_run.Generator: uint8 [num, H, W, 3]."""
    rng = generate_face.run_rng(seed, generate_face.STREAM_FAKE_Z)
    z = generate_face.sample_z(rng, num, generator.hparams.z_dim)
    return generate_face.to_uint8(generator(z))


def split_real(real, num):
    """(the reals compared with `num` fakes, two disjoint halves for the floor).

    The floor halves are `num` images each when there are 2 x num reals,
    otherwise half of them each, so the floor is never measured on more
    images than the distance it is read against.
    """
    half = min(num, len(real) // 2)
    return real[:num], (real[:half], real[half:2 * half])


def evaluate(fake, real, seed=0, features=None, log=print):
    """All metrics of uint8 fake [N, H, W, 3] against uint8 real [R, H, W, 3].

    Uses min(N, R) images of each, the reals in the order given (random,
    from `load_real`); see `split_real` for the floor.

    Returns:
      a JSON-ready dict (see the module docstring).
    """
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated faces are {fake.shape[2]}x{fake.shape[1]} but real "
                         f"faces are {real.shape[2]}x{real.shape[1]} after preprocessing")
    num = min(len(fake), len(real))
    if num < 2:
        raise ValueError(f"need at least 2 generated and 2 real images, got {len(fake)} "
                         f"and {len(real)}")
    fake = fake[:num]
    compared, (half_a, half_b) = split_real(real, num)
    log(f"SWD: {num} generated against {num} real faces")
    result = {"num_images": num, "swd": swd(fake, compared, seed)}
    log(f"SWD floor: two disjoint halves of {len(half_a)} real faces each")
    result["real_vs_real"] = swd(half_a, half_b, seed)
    result["real_vs_real_images"] = len(half_a)
    if features is not None:
        log("FID: Inception features")
        result["fid"] = fid(features, fake, compared)
        result["fid_real_vs_real"] = fid(features, half_a, half_b)
    fake_spread, real_spread = (generate_face.diversity(fake),
                                generate_face.diversity(compared))
    result["diversity"] = {"generated": fake_spread, "real": real_spread,
                           "ratio": fake_spread / max(real_spread, 1e-12),
                           "collapse_warning": fake_spread < COLLAPSE_RATIO * real_spread}
    return result


def format_table(result):
    """The human-readable report of `evaluate`'s result."""
    levels = [key for key in result["swd"] if key != "avg"]
    header = "".join(f"{level + ' px':>10}" for level in levels) + f"{'avg':>10}"
    lines = [f"{'':26}{header}"]
    for label, key in ((f"SWD x1e3 ({result['num_images']} vs {result['num_images']})",
                        "swd"),
                       (f"real vs real ({result['real_vs_real_images']} vs "
                        f"{result['real_vs_real_images']})", "real_vs_real")):
        values = "".join(f"{result[key][level]:10.2f}" for level in levels + ["avg"])
        lines.append(f"{label:26}{values}")
    if result.get("fid") is not None:
        lines.append(f"FID {result['fid']:.2f} (real vs real {result['fid_real_vs_real']:.2f})")
    else:
        lines.append(f"FID unavailable: {result['fid_unavailable']}")
    spread = result["diversity"]
    lines.append(f"diversity: generated {spread['generated']:.3f}, real {spread['real']:.3f} "
                 f"(ratio {spread['ratio']:.2f})")
    if spread["collapse_warning"]:
        lines.append(f"warning: the generated faces are less than {COLLAPSE_RATIO:.0%} as "
                     f"varied as the real ones: the generator may have collapsed")
    return "\n".join(lines)


FROM_CHECKPOINT = "faces from a checkpoint (no --fake_dir)"


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """evaluate_gan.py's options; the generated side is a checkpoint or --fake_dir."""
    real_dir: str = flag_field("", "folder of real face photos, preprocessed as in training "
                                   "(required)")
    ckpt_dir: str = flag_field("ckpt", "training run folder; its newest checkpoint that loads "
                                       "is used", modes=(FROM_CHECKPOINT,))
    checkpoint: str = flag_field("", "a checkpoint prefix (e.g. ckpt/gan.ckpt-2000), or a "
                                     "folder, to use instead of --ckpt_dir",
                                 modes=(FROM_CHECKPOINT,))
    use_ema: bool = flag_field(True, "generate with the moving average of G's weights when "
                                     "the run kept one", modes=(FROM_CHECKPOINT,))
    fake_dir: str = flag_field("", "a folder of generated images instead of a checkpoint")
    num_images: int = flag_field(2000, "images per side (the literature uses 16384)")
    seed: int = flag_field(0, "seed of z, the real-image sample, neighbourhoods and "
                              "projections")
    inception_weights: str = flag_field("", "classify_image_graph_def.pb of TensorFlow's "
                                            "inception-2015-12-05 release, for FID")
    json: bool = flag_field(False, "print one JSON object on stdout (progress goes to stderr)")
    # How real images are preprocessed with --fake_dir (a checkpoint uses its run's).
    crop_h: int = flag_field(108, "centre-crop height of the real images",
                             modes=("--fake_dir",))
    crop_w: int = flag_field(108, "centre-crop width of the real images",
                             modes=("--fake_dir",))
    is_crop: bool = flag_field(True, "centre-crop the real images before resizing",
                               modes=("--fake_dir",))

    def problems(self):
        found = []
        if not self.real_dir:
            found.append("--real_dir is required: a folder of real face photos")
        if self.num_images < 2:
            found.append(f"--num_images must be at least 2, got {self.num_images}")
        return found + below(self, ["seed"], 0) + below(self, ["crop_h", "crop_w"], 1)


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    add_flags(parser.add_argument_group("options (each says where it applies)"),
              EvaluateOptions, suppress_defaults=True)
    return parser


def parse_flags(argv=None):
    """argv -> EvaluateOptions; an option of the other side is an error."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    options = from_flags(EvaluateOptions, given)
    side = "--fake_dir" if options.fake_dir else FROM_CHECKPOINT
    problems = misplaced(EvaluateOptions, given, side) + options.problems()
    if problems:
        parser.error("; ".join(problems))
    return options


def main(argv=None):
    options = parse_flags(argv)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if options.json else print
    try:
        result = load_and_evaluate(options, log)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result) if options.json else format_table(result), flush=True)
    return 0


def load_and_evaluate(options, log):
    """Load both sides and evaluate; the result also says what was compared."""
    features, fid_reason = None, None
    if options.inception_weights:
        if not Path(options.inception_weights).is_file():
            raise FileNotFoundError(f"--inception_weights {options.inception_weights} not found")
        features = InceptionFeatures(options.inception_weights)
    else:
        fid_reason = ("no --inception_weights given; FID needs the standard Inception "
                      "network file (classify_image_graph_def.pb from TensorFlow's "
                      "inception-2015-12-05.tgz), which this project does not download")
    described = {"seed": options.seed, "real_dir": generate_face.printable(options.real_dir)}
    if options.fake_dir:
        fake = load_generated(options.fake_dir, options.num_images, log)
        prep = generate_face.Preprocessing(options.crop_h, options.crop_w, fake.shape[1],
                                           fake.shape[2], options.is_crop)
        described["fake_dir"] = generate_face.printable(options.fake_dir)
    else:
        import gan_run  # TensorFlow is imported only when a checkpoint is used
        with gan_run.Generator(options.ckpt_dir, options.checkpoint or None, options.use_ema,
                               log=log) as generator:
            hparams = generator.hparams
            use_ema = options.use_ema and hparams.uses_ema
            log(f"generating {options.num_images} faces from {generator.checkpoint}"
                f"{' (moving-average weights)' if use_ema else ''}")
            fake = generate_faces(generator, options.num_images, options.seed)
        prep = gan_run.preprocessing(hparams)
        described.update(checkpoint=generator.checkpoint, step=generator.step, ema=use_ema)
    real = load_real(options.real_dir, prep, options.num_images, options.seed, log)
    result = evaluate(fake, real, options.seed, features, log)
    if fid_reason:
        result["fid"] = None
        result["fid_unavailable"] = fid_reason
    return {**result, **described}


if __name__ == "__main__":
    sys.exit(main())
