"""The training step with layers.py's layer choices as they are, against
the same step with some of them changed, timed in one process.

    python bench/layer_ab.py --variant "oneDNN forward: PATCH_FORWARD_MIN_WEIGHTS=1000000000"
    python bench/layer_ab.py --recipe --iters 10 --variant "8x8 patches: PATCH_MATMUL_MAX_PIXELS=64"
    python bench/layer_ab.py --recipe --iters 10 --variant "classic: --schedule classic"

Each variant sets layers.py's module constants (the thresholds that pick
how a layer is written: PATCH_MATMUL_MAX_PIXELS, PATCH_MATMUL_MIN_FP32_WEIGHTS,
PATCH_FORWARD_MIN_WEIGHTS, SUBPIXEL_MAX_CHANNELS, and the DILATED_*
constants) while its graph is built,
then puts them back; or, written as train_gan.py flags, changes
hyperparameters of the step (e.g. its --schedule). Every graph is stepped
as bench/train_speed.py steps it, in rounds taken in turn forwards and backwards
(train_speed.alternating), and each figure is the median over rounds. The numbers are seconds per iteration and how many
times faster than the step as it is.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_speed  # noqa: E402  (puts the project on the path, sets oneDNN's default)
import hardware  # noqa: E402
import layers  # noqa: E402

AS_IS = "as it is"
CONSTANTS = ("PATCH_MATMUL_MAX_PIXELS", "PATCH_MATMUL_MIN_FP32_WEIGHTS",
             "PATCH_FORWARD_MIN_WEIGHTS", "SUBPIXEL_MAX_CHANNELS",
             "DILATED_WEIGHT_GRADIENT_MAX_PIXELS", "DILATED_BF16_WEIGHT_GRADIENT_MAX_PIXELS",
             "BATCH_NORM_ROW_PIXELS")


def parse_variant(text):
    """"name: CONSTANT=value, ..." -> (name, {CONSTANT: int value});
    "name: --flag value ..." -> (name, [train_gan.py flags])."""
    name, sep, settings = text.partition(":")
    if not sep or not settings.strip():
        raise ValueError(f"--variant {text!r}: expected \"name: CONSTANT=value, ...\" "
                         f"or \"name: --flag value ...\"")
    if settings.strip().startswith("--"):
        return name.strip(), settings.split()
    values = {}
    for setting in settings.split(","):
        constant, _, value = (part.strip() for part in setting.partition("="))
        if constant not in CONSTANTS:
            raise ValueError(f"--variant {text!r}: {constant!r} is not one of "
                             + ", ".join(CONSTANTS))
        try:
            values[constant] = int(value)
        except ValueError:
            raise ValueError(f"--variant {text!r}: {constant} takes a whole number, "
                             f"not {value!r}") from None
    return name.strip(), values


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--variant", action="append", default=[], required=True,
                        help="\"name: CONSTANT=value, ...\" or \"name: --flag value ...\" "
                             "(train_gan.py hyperparameters); repeat for more variants")
    parser.add_argument("--recipe", action="store_true",
                        help="bench/race.py's recipe at half width instead of the default model")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--gf_dim", type=int, default=64)
    parser.add_argument("--df_dim", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=16, help="rounds (median)")
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(text) for text in args.variant]
    except ValueError as error:
        parser.error(str(error))
    if AS_IS in dict(variants):
        parser.error(f"--variant: {AS_IS!r} names the unchanged step")
    speed_args = ["--precisions", args.precision, "--gf_dim", str(args.gf_dim),
                  "--df_dim", str(args.df_dim), "--batch_size", str(args.batch_size)]
    speed = train_speed.parse_args(speed_args + (["--recipe"] if args.recipe else []))
    args.hparams = train_speed.hparams_of(speed, args.precision)
    args.variants = {}  # name: (hparams, constants, its settings as printed)
    for name, settings in variants:
        if isinstance(settings, list):  # train_gan.py flags, after the step's own
            flags = argparse.Namespace(**{**vars(speed), "train_flags": " ".join(
                [speed.train_flags, *settings])})
            args.variants[name] = (train_speed.hparams_of(flags, args.precision), {},
                                   " ".join(settings))
        else:
            args.variants[name] = (args.hparams, settings,
                                   ", ".join(f"{k}={v}" for k, v in settings.items()))
    return args


def build(hparams, constants):
    """A train_speed.TensorFlowRun whose graph is built with `constants` set."""
    saved = {name: getattr(layers, name) for name in constants}
    try:
        for name, value in constants.items():
            setattr(layers, name, value)
        return train_speed.TensorFlowRun(hparams)
    finally:
        for name, value in saved.items():
            setattr(layers, name, value)


def main(argv=None):
    args = parse_args(argv)
    runs = {AS_IS: build(args.hparams, {})}
    runs.update((name, build(hparams, constants))
                for name, (hparams, constants, _) in args.variants.items())
    for run in runs.values():
        for _ in range(args.warmup):
            run.step()
    times = {name: [] for name in runs}
    for round_index in range(args.rounds):
        for name in train_speed.alternating(runs, round_index):
            times[name].append(train_speed.seconds_per_iteration(runs[name], args.iters))
    print(hardware.describe())
    print(f"{'recipe' if args.recipe else 'default model'}, {args.precision}, gf_dim "
          f"{args.hparams.gf_dim}, df_dim {args.hparams.df_dim}; median of {args.rounds} "
          f"rounds x {args.iters} iterations, in turn forwards and backwards\n")
    base = statistics.median(times[AS_IS])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        settings = args.variants[name][2] if name in args.variants else ""
        print(f"{name:28s} {median:8.4f} s/iter  {base / median:6.3f}x  {settings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
