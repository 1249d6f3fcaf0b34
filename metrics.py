"""Face-quality metrics: SWD, FID, KID and diversity, of generated against real faces.

  SWD  sliced Wasserstein distance between 7x7 neighbourhoods of the
       Laplacian pyramids of both sets, as defined for Progressive GAN
       (Karras et al. 2018), x1000 per level. A statistic of pixel patches.
  FID  Frechet distance between Gaussians fitted to the 2048 Inception pool
       features of each set (Heusel et al. 2017): the figure papers report.
       Biased upward on a few thousand faces, so compare FIDs of equal counts.
  KID  squared MMD of the same features with the cubic polynomial kernel
       (Binkowski et al. 2018), unbiased, as a mean and standard deviation
       over random subsets: comparable across sample counts.
  diversity  mean distance between two generated faces against the same
       among real faces; a ratio far below 1 means mode collapse.

Every distance comes with a floor: the same distance between two disjoint
halves of the real set, which a perfect generator would reach. NumPy and
SciPy only; the Inception network (inception.py) is passed in as a function
of images, so that it is loaded once.
"""

import math

import numpy as np
import scipy.ndimage

import generate_face

# Sliced Wasserstein distance settings of Progressive GAN.
PATCH_SIZE = 7            # neighbourhoods are PATCH_SIZE x PATCH_SIZE x 3
PATCHES_PER_IMAGE = 128   # per image and pyramid level
DIRECTION_REPEATS = 4     # rounds of random projections ...
DIRECTIONS_PER_REPEAT = 128  # ... of this many unit directions each
SMALLEST_LEVEL = 16       # the pyramid stops at 16 px
BINOMIAL_5 = np.array([1, 4, 6, 4, 1], np.float32) / 16  # separable 5x5 binomial

# The evaluation's random streams (generate_face.run_rng): which real faces,
# which neighbourhoods, which projection directions, the z of the generated
# faces, KID's subsets.
STREAM_PICK_REAL = 10
STREAM_PATCHES = 11
STREAM_DIRECTIONS = 12
STREAM_FAKE_Z = 13
STREAM_KID_SUBSETS = 14

# Faces less varied than this fraction of the real ones (see `diversity`)
# suggest a mode collapse: evaluate_gan.py and training's watchdog warn.
COLLAPSE_RATIO = 0.5
DIVERSITY_IMAGES = 512  # faces `diversity` compares, all pairs


def diversity(images, limit=DIVERSITY_IMAGES):
    """Root-mean-square pixel difference between two faces, over all pairs.

    Args:
      images: uint8 [N, H, W, 3]; the first `limit` are used.

    Returns:
      float in [0, 2] (pixels scaled to [-1, 1]); 0 when all faces are equal.
    """
    count = min(len(images), limit)
    flat = generate_face.to_unit_range(np.asarray(images[:count]))
    flat = flat.reshape(count, -1).astype(np.float64)
    squared = np.sum(flat ** 2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * flat @ flat.T
    pairs = np.triu_indices(count, k=1)
    return float(np.sqrt(np.maximum(distances[pairs], 0) / flat.shape[1]).mean())


def diversity_ratio(generated_spread, real_spread):
    """Generated faces' `diversity` over the real faces': near 1 when as
    varied, below COLLAPSE_RATIO a likely collapse (0 guarded: one repeated
    real face)."""
    return generated_spread / max(real_spread, 1e-12)


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
    rng = generate_face.run_rng(seed, STREAM_PATCHES)
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
    rng = generate_face.run_rng(seed, STREAM_DIRECTIONS)
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
# FID and KID, on features such as inception.InceptionFeatures gives
# ---------------------------------------------------------------------------

# KID over random subsets, as Binkowski et al. report it: the mean is the
# unbiased estimate, the standard deviation its spread over subsets.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # faces per side in a subset, at most half of the smaller set


def feature_statistics(features):
    """Mean [D] and covariance [D, D] of features [N, D] (float64)."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_a, cov_a, mean_b, cov_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), two Gaussians' distance.

    Tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), a symmetric matrix with the same eigenvalues: two
    symmetric eigendecompositions, stable also for the singular covariances
    of fewer faces than features, where a general matrix square root of
    S_a S_b leaves rounding noise (imaginary parts, NaNs).
    """
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    middle_values = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sum(np.sqrt(np.clip(middle_values, 0, None)))
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def fid_of_features(features_a, features_b):
    """FID between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def kid_subset_size(count_a, count_b):
    """Faces per side in each KID subset: KID_SUBSET_SIZE, or half of the
    smaller set so that the subsets differ (at least 2)."""
    return max(2, min(KID_SUBSET_SIZE, count_a // 2, count_b // 2))


def kernel_inception_distance(features_a, features_b, seed=0, subsets=KID_SUBSETS):
    """KID: the unbiased squared MMD with the kernel k(x, y) = (x.y / D + 1)^3.

    Args:
      features_a, features_b: [N, D] and [M, D], each at least 2 rows.
      seed: picks the subsets; the same seed gives the same numbers.

    Returns:
      (mean, standard deviation) over `subsets` random subsets of
      kid_subset_size(N, M) rows per side, drawn without replacement.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"KID needs at least 2 faces a side, got {len(a)} and {len(b)}")
    dimensions = a.shape[1]
    # Every kernel value once; subsets then only sum parts of these.
    kernel_aa = (a @ a.T / dimensions + 1) ** 3
    kernel_bb = (b @ b.T / dimensions + 1) ** 3
    kernel_ab = (a @ b.T / dimensions + 1) ** 3
    size = kid_subset_size(len(a), len(b))
    rng = generate_face.run_rng(seed, STREAM_KID_SUBSETS)
    values = []
    for _ in range(subsets):
        pick_a = rng.choice(len(a), size, replace=False)
        pick_b = rng.choice(len(b), size, replace=False)
        within_a = kernel_aa[np.ix_(pick_a, pick_a)]
        within_b = kernel_bb[np.ix_(pick_b, pick_b)]
        # Unbiased: a face's kernel with itself is left out of both means.
        values.append((within_a.sum() - np.trace(within_a)) / (size * (size - 1))
                      + (within_b.sum() - np.trace(within_b)) / (size * (size - 1))
                      - 2 * kernel_ab[np.ix_(pick_a, pick_b)].mean())
    return float(np.mean(values)), float(np.std(values))


def inception_scores(fake_features, real_features, seed=0):
    """{"fid", "kid", "kid_std"} of generated against real features."""
    kid, kid_std = kernel_inception_distance(fake_features, real_features, seed)
    return {"fid": fid_of_features(fake_features, real_features), "kid": kid,
            "kid_std": kid_std}


# ---------------------------------------------------------------------------
# All metrics of two sets
# ---------------------------------------------------------------------------

def generate_faces(generator, num, seed):
    """`num` faces from a gan_run.Generator, from the evaluation's own z
    stream: uint8 [num, H, W, 3]."""
    rng = generate_face.run_rng(seed, STREAM_FAKE_Z)
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


def evaluate(fake, real, seed=0, features=None, log=print, num_real=None):
    """All metrics of uint8 fake [N, H, W, 3] against uint8 real [R, H', W', 3].

    FID and KID (when `features`, a function of images to [N, D] features,
    is given) compare every fake with the first `num_real` reals (default
    N); SWD takes the same number of each, min(N, num_real), and needs both
    at one size. The floors compare the first two disjoint halves of `real`
    (see `split_real`), so pass up to 2 x num_real reals in a random order.

    Returns:
      a JSON-ready dict; a metric that could not be computed is None, with
      its reason under "<metric>_unavailable".
    """
    num_real = min(len(real), num_real or len(fake))
    if len(fake) < 2 or num_real < 2:
        raise ValueError(f"need at least 2 generated and 2 real images, got {len(fake)} "
                         f"and {len(real)}")
    num = min(len(fake), num_real)  # SWD's faces a side
    compared = real[:num_real]
    _, (half_a, half_b) = split_real(real, num)
    half = len(half_a)
    result = {"num_images": num, "generated_images": len(fake), "real_images": num_real,
              "real_vs_real_images": half}
    if fake.shape[1:] == real.shape[1:]:
        log(f"SWD: {num} generated against {num} real faces, and its floor on two "
            f"halves of {half} real faces")
        result["swd"] = swd(fake[:num], compared[:num], seed)
        result["real_vs_real"] = swd(half_a, half_b, seed)
    else:
        result["swd"] = result["real_vs_real"] = None
        result["swd_unavailable"] = (
            f"generated faces are {fake.shape[2]}x{fake.shape[1]} but real faces are "
            f"{real.shape[2]}x{real.shape[1]}; SWD compares images of one size")
    if features is not None:
        featured = real[:max(num_real, 2 * half)]  # the compared faces and both halves
        log(f"FID and KID: Inception features of {len(fake)} generated and {len(featured)} "
            f"real faces; {len(fake)} generated against {num_real} real, and the floor on "
            f"two halves of {half} real faces")
        real_features = features(featured)
        scores = inception_scores(features(fake), real_features[:num_real], seed)
        floor = inception_scores(real_features[:half], real_features[half:2 * half], seed)
        result.update(scores, **{f"{name}_real_vs_real": value
                                 for name, value in floor.items()})
        result["kid_subset_size"] = kid_subset_size(len(fake), num_real)
    fake_spread, real_spread = (diversity(fake), diversity(compared))
    result["diversity"] = {"generated": fake_spread, "real": real_spread,
                           "ratio": diversity_ratio(fake_spread, real_spread),
                           "collapse_warning": fake_spread < COLLAPSE_RATIO * real_spread}
    return result


class FaceScorer:
    """Scores sets of generated faces against one fixed set of real faces.

    The real faces' Inception features are computed once, here, so each
    call costs the generated faces' features only: what an evaluation
    during training, or at every mark of a race, needs.

    Args:
      real: uint8 [R, H, W, 3], in a random order: the first `num` (default
        all R) are compared with the generated faces; `floor` compares the
        first two disjoint halves (see `split_real`).
      features: a function of uint8 images to [N, D] features (such as
        inception.InceptionFeatures), or None for SWD alone.
    """

    def __init__(self, real, features=None, seed=0, num=None):
        self.num = min(num or len(real), len(real))
        self.real, self.features, self.seed = real, features, seed
        self.real_features = features(real) if features is not None else None
        self.real_spread = diversity(real[:self.num])

    def __call__(self, fake):
        """uint8 [N, H, W, 3] -> {"swd", "diversity", "fid", "kid", "kid_std"}:
        SWD's mean over levels, of min(N, num) faces a side; the diversity
        ratio, generated over the `num` compared reals (as evaluate's
        "ratio"; a fall towards COLLAPSE_RATIO is a collapse that SWD, FID
        and KID can miss while they improve); FID and KID (with features)
        of all N against the `num` compared reals."""
        count = min(len(fake), self.num)
        scores = {"swd": swd(fake[:count], self.real[:count], self.seed)["avg"],
                  "diversity": diversity_ratio(diversity(fake), self.real_spread)}
        if self.features is not None:
            scores.update(inception_scores(self.features(fake),
                                           self.real_features[:self.num], self.seed))
        return scores

    def floor(self):
        """The same scores between two disjoint halves of the real faces."""
        _, (half_a, half_b) = split_real(self.real, self.num)
        half = len(half_a)
        scores = {"swd": swd(half_a, half_b, self.seed)["avg"], "images": half,
                  "diversity": diversity_ratio(diversity(half_a), diversity(half_b))}
        if self.features is not None:
            scores.update(inception_scores(self.real_features[:half],
                                           self.real_features[half:2 * half], self.seed))
        return scores
