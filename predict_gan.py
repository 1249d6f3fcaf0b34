"""Write faces from a trained checkpoint.

    python predict_gan.py                          # 8x8 grid -> face.png
    python predict_gan.py --num 1 --seed 7         # one 64x64 face
    python predict_gan.py --save_z z.npy           # the grid, and its z (one per cell)
    python predict_gan.py --interpolate 3,17,42 --steps 8 --out walk.png --gif walk.gif
    python predict_gan.py --arithmetic "3,7 - 12,5 + 20" --z_file z.npy --out sum.png
    python predict_gan.py --complete a.jpg b.png --mask center --out completed.png
    python predict_gan.py --export_savedmodel export/faces

The graph is rebuilt from the hparams.json saved next to the checkpoints,
and the networks run in inference mode (batch-norm moving averages).
"""

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

import complete_face
import gan_run
import generate_face
from cli_flags import add_flags, below, flag_field, from_flags, misplaced

tf1 = tf.compat.v1


def seed_z(seed, z_dim, truncation=1.0):
    """The z of `--num 1 --seed <seed>`: float32 [z_dim]."""
    return generate_face.sample_grid_z(seed, 1, z_dim)[0] * truncation


def predict(generator, num=64, seed=0, out="face.png", truncation=1.0, save_z=None):
    """Write `num` faces from z sampled with `seed` as one grid PNG.

    Args:
      generator: a gan_run.Generator.
      truncation: z is drawn uniform in [-truncation, truncation): below 1,
        faces closer to the average, less varied.
      save_z: also write the z vectors, float32 [num, z_dim] (cell i of the
        grid is row i // columns, column i % columns), for --z_file.

    Returns:
      the path written.
    """
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    z = generate_face.sample_grid_z(seed, num, generator.hparams.z_dim) * truncation
    path = generate_face.save_grid(generator(z), out)
    if save_z:
        save_z_file(z, save_z)
    return path


def save_z_file(z, path):
    """Write z [N, z_dim] as .npy, atomically."""
    with generate_face.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, z.astype(np.float32))


def load_z_file(path, z_dim):
    """z vectors saved by --save_z: float32 [N, z_dim] (never unpickled)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read --z_file {path}: {error}") from error
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"--z_file {path} holds an array of shape {list(z.shape)}; this "
                         f"checkpoint needs [N, {z_dim}] (write one with --save_z)")
    return z.astype(np.float32)


# ---------------------------------------------------------------------------
# Interpolation and arithmetic in z
# ---------------------------------------------------------------------------

def parse_numbers(text, flag):
    """'3,17, 42' -> [3, 17, 42] (ValueError naming the flag otherwise)."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if any(n < 0 for n in numbers):
        raise ValueError(f"{flag} numbers must be 0 or more, got {text!r}")
    return numbers


def slerp(a, b, t):
    """Spherical interpolation from a (t=0) to b (t=1) along the great circle.

    Walks at a steady angle between the two directions while the length
    changes linearly with the ends', avoiding the short vectors that a
    straight line through the middle of z-space passes (White 2016). Nearly
    parallel vectors fall back to a straight line.
    """
    cosine = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    omega = np.arccos(np.clip(cosine, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return (1.0 - t) * a + t * b
    # Coefficients first, so that t = 0 and t = 1 give the ends exactly.
    weight_a = np.sin((1.0 - t) * omega) / np.sin(omega)
    weight_b = np.sin(t * omega) / np.sin(omega)
    return weight_a * a + weight_b * b


def interpolation_z(ends, steps):
    """z of a walk through `ends` [K, z_dim]: [(K - 1) * steps, z_dim].

    Row r (the pair ends[r] -> ends[r + 1]) holds `steps` points, both ends
    included.
    """
    return np.stack([slerp(a, b, t) for a, b in zip(ends[:-1], ends[1:])
                     for t in np.linspace(0.0, 1.0, steps)]).astype(np.float32)


def interpolate(generator, points, steps, out, gif=None, z_file=None, truncation=1.0):
    """Write a grid walking through z (rows = pairs, columns = steps).

    Args:
      points: seeds (each the face of `--num 1 --seed <s>`), or with z_file
        cells of that file.
      gif: also write an animation through every point and back.
    """
    if len(points) < 2:
        raise ValueError("--interpolate needs at least 2 seeds (or cells), e.g. 3,17")
    if steps < 2:
        raise ValueError(f"--steps must be at least 2 (the two ends), got {steps}")
    z_dim = generator.hparams.z_dim
    ends = pick_cells(load_z_file(z_file, z_dim), points, "--interpolate") \
        if z_file else np.stack([seed_z(s, z_dim, truncation) for s in points])
    images = generator(interpolation_z(ends, steps))
    path = generate_face.save_grid(images, out, cols=steps)
    if gif:
        # Skip each pair's first frame after the first pair: it repeats the
        # previous pair's last.
        walk = [image for i, image in enumerate(images) if i < steps or i % steps]
        frames = [generate_face.to_uint8(image) for image in walk + walk[-2:0:-1]]
        generate_face.atomic_save_image(frames, gif, duration=120, loop=0)
    return path


def pick_cells(z, cells, flag):
    """z[cells], with an error naming the flag when a cell is out of range."""
    for cell in cells:
        if cell >= len(z):
            raise ValueError(f"{flag}: cell {cell} is out of range; the z file holds "
                             f"{len(z)} vectors (cells 0-{len(z) - 1})")
    return z[cells]


ARITHMETIC_TERM = re.compile(r"\s*([+-]?)\s*(\d+(?:\s*,\s*\d+)*)\s*")


def parse_arithmetic(expression):
    """'3,7 - 12,5 + 20' -> [(+1, [3, 7]), (-1, [12, 5]), (+1, [20])]."""
    terms, position = [], 0
    while position < len(expression):
        match = ARITHMETIC_TERM.match(expression, position)
        if not match or (terms and not match.group(1)):
            raise ValueError(
                f"cannot read --arithmetic {expression!r} at character {position + 1}: "
                f"write terms of comma-separated cells joined by + or -, e.g. "
                f"\"3,7 - 12,5 + 20\"")
        sign = -1.0 if match.group(1) == "-" else 1.0
        terms.append((sign, parse_numbers(re.sub(r"\s", "", match.group(2)), "--arithmetic")))
        position = match.end()
    if not terms:
        raise ValueError("--arithmetic is empty; e.g. \"3,7 - 12,5 + 20\"")
    return terms


def arithmetic(generator, expression, z_file, out):
    """Face arithmetic (Radford et al. 2016): average each term's cells' z,
    add and subtract the averages, draw the result.

    Writes one row: each term's average face, then the result.

    Returns:
      (path, result z [z_dim]).
    """
    if not z_file:
        raise ValueError("--arithmetic needs --z_file: write a grid with --save_z z.npy, "
                         "pick its cells, then pass --z_file z.npy")
    z = load_z_file(z_file, generator.hparams.z_dim)
    terms = parse_arithmetic(expression)
    averages = [pick_cells(z, cells, "--arithmetic").mean(axis=0) for _, cells in terms]
    result = sum(sign * average for (sign, _), average in zip(terms, averages))
    images = generator(np.stack(averages + [result]))
    return generate_face.save_grid(images, out, cols=len(images)), result


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

def export_savedmodel(checkpoint, hparams, out_dir, use_ema=True):
    """Write the generator as a SavedModel, usable without this repository.

    Signatures:
      serving_default: z float32 [N, z_dim] -> images float32 [N, H, W, 3]
        in [-1, 1], and images_uint8 [N, H, W, 3].
      preprocessing: no input -> the constants of the run's data pipeline
        (crop, output size, z's length and range).

    The folder is written under a temporary name and renamed when complete.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"--export_savedmodel {out_dir} already exists; pass a new folder")
    graph = tf.Graph()
    with graph.as_default():
        net = gan_run.GeneratorNet(hparams, use_ema=use_ema)
        z = net.z
        images = tf.identity(net.images, name="images")
        images_uint8 = tf.identity(net.images_uint8, name="images_uint8")
        constants = {name: tf.constant(value, name=name) for name, value in (
            ("crop_h", hparams.crop_h), ("crop_w", hparams.crop_w),
            ("is_crop", hparams.is_crop), ("output_h", hparams.output_h),
            ("output_w", hparams.output_w), ("z_dim", hparams.z_dim),
            ("z_min", -1.0), ("z_max", 1.0))}
        build = tf1.saved_model.build_signature_def
        info = tf1.saved_model.build_tensor_info
        predict_method = tf1.saved_model.PREDICT_METHOD_NAME
        signatures = {
            "serving_default": build(
                inputs={"z": info(z)},
                outputs={"images": info(images), "images_uint8": info(images_uint8)},
                method_name=predict_method),
            "preprocessing": build(
                inputs={}, outputs={k: info(v) for k, v in constants.items()},
                method_name=predict_method),
        }
        restorer = gan_run.NetworkRestorer(graph)
    with tf1.Session(graph=graph, config=hardware.session_config()) as sess, \
            generate_face.atomic_path(out_dir) as temporary:
        checkpoint = restorer.restore(sess, checkpoint=checkpoint)
        builder = tf1.saved_model.Builder(str(temporary))
        builder.add_meta_graph_and_variables(sess, [tf1.saved_model.SERVING],
                                             signature_def_map=signatures)
        builder.save()
        extra = temporary / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "hparams.json").write_text(json.dumps(
            {**hparams.to_dict(), "checkpoint": str(checkpoint)}, indent=2) + "\n")
    return out_dir


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

SAMPLING = "sampling (no mode flag)"
MODES = ("interpolate", "arithmetic", "complete", "export_savedmodel")  # one flag each
WALK = ("--interpolate",)


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """predict_gan.py's options; each names the modes it belongs to."""
    ckpt_dir: str = flag_field("ckpt", "folder of a training run; its newest checkpoint that "
                                       "loads is used")
    checkpoint: str = flag_field("", "a checkpoint prefix (e.g. ckpt/gan.ckpt-2000), or a "
                                     "folder, to use instead of --ckpt_dir")
    use_ema: bool = flag_field(True, "use the moving average of G's weights when the run "
                                     "kept one")
    out: str = flag_field("face.png", "picture to write",
                          modes=(SAMPLING, "--interpolate", "--arithmetic", "--complete"))
    seed: int = flag_field(0, "seed of the z vectors (sampling), or of a random mask and "
                              "the starting z (--complete)", modes=(SAMPLING, "--complete"))
    truncation: float = flag_field(1.0, "draw z in [-t, t) instead of [-1, 1): below 1, more "
                                        "typical and less varied faces",
                                   modes=(SAMPLING, "--interpolate"))
    # Sampling, the default mode.
    num: int = flag_field(64, "faces to write, tiled in a grid (1: a single face)",
                          modes=(SAMPLING,))
    save_z: str = flag_field("", "also save the grid's z vectors, one per cell, to this .npy",
                             modes=(SAMPLING,), metavar="FILE.npy")
    # Walks and arithmetic.
    steps: int = flag_field(8, "faces per pair, both ends included", modes=WALK)
    gif: str = flag_field("", "also write the walk as an animation to this .gif", modes=WALK,
                          metavar="FILE.gif")
    z_file: str = flag_field("", "z vectors from --save_z; numbers then name its cells",
                             modes=("--interpolate", "--arithmetic"), metavar="FILE.npy")
    # Completion.
    mask: str = flag_field("center", f"{', '.join(complete_face.MASK_KINDS)}, or a PNG of "
                                     f"the model's size, white = keep, black = fill",
                           modes=("--complete",))
    iterations: int = flag_field(300, "Adam steps on z", modes=("--complete",))
    z_lr: float = flag_field(0.01, "Adam learning rate on z", modes=("--complete",))
    perceptual_weight: float = flag_field(0.1, "weight of the perceptual loss against the "
                                               "contextual one", modes=("--complete",))
    blend: str = flag_field("poisson", "how the fill meets the photo at the seam",
                            modes=("--complete",), choices=("poisson", "none"))

    def problems(self):
        found = below(self, ["num", "steps", "iterations"], 1) + below(self, ["seed"], 0)
        if not 0 < self.truncation <= 1:
            found.append(f"--truncation must be in (0, 1], got {self.truncation}")
        if not self.z_lr > 0:
            found.append(f"--z_lr must be above 0, got {self.z_lr}")
        if not self.perceptual_weight >= 0:
            found.append(f"--perceptual_weight must be 0 or more, got {self.perceptual_weight}")
        return found


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS, allow_abbrev=False)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--interpolate", metavar="A,B[,C...]",
                       help="walk through z between these seeds (or --z_file cells)")
    modes.add_argument("--arithmetic", metavar="EXPR",
                       help="face arithmetic on --z_file cells, e.g. \"3,7 - 12,5 + 20\"")
    modes.add_argument("--complete", nargs="+", metavar="IMAGE",
                       help="fill the --mask hole of these face photos (or folders of them)")
    modes.add_argument("--export_savedmodel", metavar="DIR",
                       help="write the generator as a SavedModel to DIR")
    add_flags(parser.add_argument_group("options (each says which modes it belongs to)"),
              PredictOptions, suppress_defaults=True)
    return parser


def parse_flags(argv=None):
    """argv -> (mode: SAMPLING or a mode flag such as "--complete", its value,
    PredictOptions). An option of another mode is an error."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    mode, value = next(((f"--{name}", given[name]) for name in MODES if name in given),
                       (SAMPLING, None))
    options = from_flags(PredictOptions, given)
    problems = misplaced(PredictOptions, given, mode) + options.problems()
    if problems:
        parser.error("; ".join(problems))
    return mode, value, options


def main(argv=None):
    mode, value, options = parse_flags(argv)
    # TensorFlow's Python-side deprecation notices (the SavedModel builder's,
    # say) are not actionable for a user of this script.
    tf.get_logger().setLevel("ERROR")
    try:
        message = carry_out(mode, value, options)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


def warn(text):
    print(text, file=sys.stderr, flush=True)


def draw(generator, mode, value, options):
    """The modes that only run the generator: a grid, a walk, arithmetic."""
    used = generator.checkpoint
    if mode == "--interpolate":
        points = parse_numbers(value, "--interpolate")
        out = interpolate(generator, points, options.steps, options.out, options.gif or None,
                          options.z_file or None, options.truncation)
        also = f" and {options.gif}" if options.gif else ""
        return (f"wrote {out}{also} ({len(points) - 1} row(s) of {options.steps} steps "
                f"from {used})")
    if mode == "--arithmetic":
        out, _ = arithmetic(generator, value, options.z_file or None, options.out)
        return f"wrote {out} (the terms' faces, then the result, from {used})"
    out = predict(generator, options.num, options.seed, options.out, options.truncation,
                  options.save_z or None)
    saved = f"; z in {options.save_z}" if options.save_z else ""
    plural = "s" if options.num > 1 else ""
    return f"wrote {out} ({options.num} face{plural} from {used}{saved})"


def carry_out(mode, value, options):
    """Carry out the mode (see parse_flags); returns the line to print."""
    source = options.checkpoint or None
    if mode not in ("--complete", "--export_savedmodel"):
        with gan_run.Generator(options.ckpt_dir, source, options.use_ema,
                               log=warn) as generator:
            return draw(generator, mode, value, options)
    # Completion and export build graphs of their own; given the folder, they
    # restore the checkpoint that gan_run's policy picks, as the Generator does.
    checkpoint = source or options.ckpt_dir
    hparams = gan_run.run_hparams(options.ckpt_dir, source)
    if mode == "--complete":
        known = complete_face.load_images_to_complete(value, hparams)
        mask = complete_face.build_mask(options.mask, hparams.output_h, hparams.output_w,
                                        options.seed)
        started = time.monotonic()
        result = complete_face.complete(checkpoint, hparams, known, mask, options.iterations,
                                        options.z_lr, options.perceptual_weight, options.blend,
                                        options.seed, options.use_ema)
        columns = [result["masked"], result["generated"], result["blended"], known]
        out = generate_face.save_grid(np.stack(columns, axis=1).reshape(
            -1, *known.shape[1:]), options.out, cols=len(columns))
        return (f"wrote {out}: one row per image: masked, generated, blended, original "
                f"({len(known)} image(s), {time.monotonic() - started:.0f}s)")
    out = export_savedmodel(checkpoint, hparams, value, options.use_ema)
    return (f"wrote {out}: load it with tf.saved_model.load('{out}'); "
            f"signatures serving_default (z -> images) and preprocessing")


if __name__ == "__main__":
    sys.exit(main())
