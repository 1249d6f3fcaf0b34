"""Semantic image completion (Yeh et al. 2017): fill a hole in a face photo
with the trained generator.

A mask marks the known pixels; z is fitted with Adam so that G(z) matches
the known pixels (the contextual loss, weighted towards the hole's border)
while D still finds it a plausible face (the perceptual loss); the fill is
then pasted into the hole with Poisson blending at the seam.

    python predict_gan.py --complete a.jpg b.png --mask center --out completed.png

A mask is float32 [H, W]: 1 where the pixel is known, 0 in the hole.
"""

import time
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf
from PIL import Image

import gan_run
import generate_face
from gan_model import ganModel

tf1 = tf.compat.v1

STREAM_MASK = 4  # the random masks' stream (see generate_face.run_rng)


MASK_KINDS = ("center", "left", "right", "top", "bottom", "random")
RANDOM_MASK_HOLE = 0.8  # share of pixels missing in a random mask
CONTEXT_WINDOW = 7      # neighbourhood of the contextual-loss weights


def make_mask(kind, height, width, seed=0):
    """A mask of one of MASK_KINDS.

    center: the middle half of each side is missing (a quarter of the area);
    left/right/top/bottom: that half of the picture is missing; random:
    RANDOM_MASK_HOLE of the pixels, chosen with `seed`, are missing.
    """
    mask = np.ones((height, width), np.float32)
    if kind == "center":
        mask[height // 4:height - height // 4, width // 4:width - width // 4] = 0
    elif kind == "left":
        mask[:, :width // 2] = 0
    elif kind == "right":
        mask[:, width // 2:] = 0
    elif kind == "top":
        mask[:height // 2] = 0
    elif kind == "bottom":
        mask[height // 2:] = 0
    elif kind == "random":
        rng = generate_face.run_rng(seed, STREAM_MASK)
        mask[rng.random((height, width)) < RANDOM_MASK_HOLE] = 0
    else:
        raise ValueError(f"unknown mask {kind!r}: use one of {', '.join(MASK_KINDS)} "
                         f"or a PNG file")
    return mask


def load_mask(path, height, width):
    """A mask drawn as a picture: white (>= 128) is known, black is the hole.

    Raises:
      ValueError: the file is missing or unreadable, not height x width, or
        has no hole, or no known pixel.
    """
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read mask {generate_face.printable(path)}: {error}") from error
    if grey.shape != (height, width):
        raise ValueError(f"mask {generate_face.printable(path)} is {grey.shape[1]}x{grey.shape[0]}; it must "
                         f"be {width}x{height}, the size the model draws")
    return check_mask((grey >= 128).astype(np.float32), generate_face.printable(path))


def check_mask(mask, name):
    """Return the mask if it has a hole and known pixels, else raise ValueError."""
    if mask.min() > 0:
        raise ValueError(f"mask {name} has no hole (no black pixel): nothing to complete")
    if mask.max() == 0:
        raise ValueError(f"mask {name} hides every pixel: nothing to complete from")
    return mask


def context_weights(mask, window=CONTEXT_WINDOW):
    """Weights of the contextual loss (Yeh et al. 2017): float32 [H, W].

    A known pixel counts by the share of hole pixels in the window around
    it, so the pixels bordering the hole, which the fill must continue,
    matter most; pixels far from the hole and the hole itself count 0.
    """
    hole_share = scipy.ndimage.uniform_filter(1.0 - mask, size=window, mode="constant")
    return (mask * hole_share).astype(np.float32)


def poisson_blend(known, generated, mask):
    """Fill the hole so that its gradients are the generated ones.

    Solves the discrete Poisson equation inside the hole (Perez et al. 2003):
    the result's Laplacian there equals the generated image's, and on the
    hole's border it meets the known pixels, so the seam disappears. Known
    pixels are returned unchanged.

    Args:
      known, generated: float [H, W, C] in [-1, 1].
      mask: [H, W], 1 known and 0 hole.

    Returns:
      float32 [H, W, C] in [-1, 1].
    """
    height, width, channels = known.shape
    hole = np.flatnonzero(mask.ravel() == 0)
    index = -np.ones(height * width, np.int64)
    index[hole] = np.arange(len(hole))
    rows, cols, values = [], [], []
    rhs = np.zeros((len(hole), channels))
    flat_known = known.reshape(-1, channels)
    flat_generated = generated.reshape(-1, channels)
    for k, pixel in enumerate(hole):
        y, x = divmod(pixel, width)
        neighbours = [(y + dy) * width + (x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                      if 0 <= y + dy < height and 0 <= x + dx < width]
        rows.append(k)
        cols.append(k)
        values.append(len(neighbours))
        for neighbour in neighbours:
            rhs[k] += flat_generated[pixel] - flat_generated[neighbour]
            if index[neighbour] >= 0:
                rows.append(k)
                cols.append(index[neighbour])
                values.append(-1.0)
            else:
                rhs[k] += flat_known[neighbour]
    system = scipy.sparse.csc_matrix((values, (rows, cols)), shape=(len(hole), len(hole)))
    solved = scipy.sparse.linalg.splu(system).solve(rhs)
    out = flat_known.astype(np.float32).copy()
    out[hole] = np.clip(solved, -1.0, 1.0)
    return out.reshape(height, width, channels)


def build_mask(spec, height, width, seed=0):
    """--mask: a kind from MASK_KINDS, or a PNG file."""
    if spec in MASK_KINDS:
        return check_mask(make_mask(spec, height, width, seed),
                                        spec)
    if not Path(spec).is_file():
        raise ValueError(f"--mask {spec} is neither a file nor one of "
                         f"{', '.join(MASK_KINDS)}")
    return load_mask(spec, height, width)


def load_images_to_complete(paths, hparams):
    """Each file (or each image of a folder) through the training preprocessing.

    Returns:
      float32 [N, H, W, 3] in [-1, 1].
    """
    prep = gan_run.preprocessing(hparams)
    files = []
    for path in paths:
        if Path(path).is_dir():
            files.extend(generate_face.list_image_files(path))
        elif Path(path).is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--complete: {path} not found")
    faces = []
    for path in files:
        try:
            faces.append(generate_face.load_face(path, prep))
        except generate_face.BadImageError as error:
            raise ValueError(f"--complete: {generate_face.printable(path)}: {error}; "
                             f"leave it out") from error
    return generate_face.to_unit_range(np.stack(faces))


def complete(checkpoint, hparams, known, mask, iterations=300, z_lr=0.01,
             perceptual_weight=0.1, blend="poisson", seed=0, use_ema=True, log=print):
    """Fill the hole of each image with the generator (Yeh et al. 2017).

    z starts random and is fitted with Adam to minimise the contextual loss
    plus perceptual_weight x the perceptual loss, clipped to z's range
    [-1, 1] after every step; the fill is then pasted into the hole, with
    Poisson blending at the seam (blend="poisson") or as it is ("none").

    Args:
      known: float32 [N, H, W, 3] in [-1, 1].
      mask: float32 [H, W], 1 known, 0 hole.

    Returns:
      dict of float32 [N, H, W, 3] arrays "masked", "generated", "blended",
      and "contextual_loss", the mean contextual loss before the first and
      after every later iteration ([iterations + 1]).
    """
    if iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {iterations}")
    if blend not in ("poisson", "none"):
        raise ValueError(f"--blend must be poisson or none, got {blend!r}")
    graph, parts = completion_graph(hparams, known, context_weights(mask), z_lr,
                                    perceptual_weight, seed, use_ema)
    step, mean_contextual, generated = parts["step"], parts["mean_contextual"], parts["generated"]
    restorer, init_own = parts["restorer"], parts["init_own"]
    with tf1.Session(graph=graph, config=hardware.session_config()) as sess:
        restorer.restore(sess, checkpoint=checkpoint, log=log)
        sess.run(init_own)
        history = fit_z(sess, step, mean_contextual, iterations, log)
        filled, final_loss = sess.run([generated, mean_contextual])
        history.append(final_loss)
    hole = (mask == 0)[..., None]
    if blend == "poisson":
        blended = np.stack([poisson_blend(k, f, mask)
                            for k, f in zip(known, filled)])
    else:
        blended = np.where(hole, filled, known)
    return {"masked": np.where(hole, 0.0, known).astype(np.float32), "generated": filled,
            "blended": blended.astype(np.float32), "contextual_loss": np.array(history)}


def completion_graph(hparams, known, weights, z_lr, perceptual_weight, seed, use_ema):
    """The graph that fits z: (graph, its parts by name: step, mean_contextual,
    generated, restorer, init_own). See `complete`."""
    count = len(known)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        start = generate_face.sample_grid_z(seed, count, hparams.z_dim)
        z = tf1.get_variable("completion/z", initializer=start)
        model = ganModel(hparams)
        generated = gan_run.GeneratorNet(hparams, z, use_ema, model).images
        contextual, perceptual = model.completion_losses(
            generated, tf.constant(known), tf.constant(weights[None]))
        loss = tf.reduce_sum(contextual + perceptual_weight * perceptual)
        fit = tf1.train.AdamOptimizer(z_lr, beta1=0.9, name="z_adam").minimize(
            loss, var_list=[z])
        with tf.control_dependencies([fit]):
            step = z.assign(tf.clip_by_value(z, -1.0, 1.0))
        mean_contextual = tf.reduce_mean(contextual)
        restorer = gan_run.NetworkRestorer(graph)
        init_own = tf1.variables_initializer(  # z and its Adam state
            [v for v in tf1.global_variables() if v not in restorer.variables])
    graph.finalize()
    return graph, {"step": step, "mean_contextual": mean_contextual, "generated": generated,
                   "restorer": restorer, "init_own": init_own}


def fit_z(sess, step, mean_contextual, iterations, log):
    """Run the z update `iterations` times; the mean contextual loss that each
    starts from."""
    history = []
    started = time.monotonic()
    for i in range(1, iterations + 1):
        history.append(sess.run([step, mean_contextual])[1])
        if i % 100 == 0 or i == iterations:
            log(f"iteration {i}/{iterations}  contextual loss {history[-1]:.3f}  "
                f"({time.monotonic() - started:.0f}s)")
    return history
