"""Which training options make better faces? Train each, measure each.

    python bench/levers.py                        # about an hour on 2 cores
    python bench/levers.py --steps 300 --every 100 --width 16   # a quick look

Splits the CelebA sample (../shared/data/celeba_sample) into training faces
and held-out faces, trains one run per configuration for the same number of
steps from the same seed, and scores every checkpoint with evaluate_gan.py's
sliced Wasserstein distance against the held-out faces. The EMA lever is read
from the classic run itself: the moving average does not change training,
so the same run is evaluated with its trained and its averaged weights. A
second seed of the classic recipe shows how far seeds alone move the score.

Runs and results stay in --work_dir; running the command again resumes
unfinished runs and skips what is already measured.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import numpy as np  # noqa: E402

import evaluate_gan  # noqa: E402
import gan_run  # noqa: E402
import generate_face  # noqa: E402
import held_out_faces  # noqa: E402
import train_gan  # noqa: E402


# name -> (training flags, evaluate with the EMA weights)
CONFIGS = {
    "classic": (["--g_ema_decay", "0.999"], False),
    "classic + EMA 0.999": (None, True),  # the classic run, averaged weights
    "classic, seed 1": (["--seed", "1"], False),
    "TTUR D 4e-4 / G 1e-4": (["--d_learning_rate", "4e-4", "--g_learning_rate", "1e-4"], False),
    "real label 0.9": (["--real_label", "0.9"], False),
    "2 G steps per D step": (["--schedule", "classic", "--g_steps", "2"], False),
    "classic in bf16": (["--precision", "bf16"], False),
}


def run_folder(work_dir, name):
    """The run a configuration trains (the EMA row reads the classic run)."""
    if CONFIGS[name][0] is None:
        name = "classic"
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    return work_dir / "runs" / slug


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    parser.add_argument("--work_dir", default="bench_runs/levers",
                        help="runs, results.json and the comparison picture")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per run")
    parser.add_argument("--every", type=int, default=400,
                        help="steps between evaluated checkpoints")
    parser.add_argument("--width", type=int, default=32, help="--gf_dim and --df_dim")
    parser.add_argument("--held_out", type=int, default=2000,
                        help="faces kept out of training, to evaluate against")
    parser.add_argument("--num_images", type=int, default=1000,
                        help="evaluate_gan.py --num_images (the floor then uses 2 x this)")
    parser.add_argument("--only", default="",
                        help="comma-separated configuration names to run (default: all)")
    args = parser.parse_args(argv)
    print(hardware.describe(), flush=True)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown --only {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    work_dir = Path(args.work_dir)
    faces = held_out_faces.split(work_dir, args.held_out, args.num_images)
    if faces is None:
        return 0
    train_dir, real = faces
    results_path = work_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    quiet = lambda text: None  # noqa: E731

    for name in names:
        flags, use_ema = CONFIGS[name]
        folder = run_folder(work_dir, name)
        if flags is not None:
            run, overrides = train_gan.parse_flags([
                "--data_root", str(train_dir), "--ckpt_dir", str(folder / "ckpt"),
                "--samples_dir", str(folder / "samples"), "--log_dir",
                str(work_dir / "logs"), "--run_name", folder.name,
                "--cache_dir", str(work_dir / "cache"), "--max_steps", str(args.steps),
                "--ckpt_every", str(args.every), "--sample_every", str(args.every),
                "--log_every", "100", "--keep_checkpoints", "100",
                "--gf_dim", str(args.width), "--df_dim", str(args.width), *flags])
            print(f"== {name}: training to step {args.steps}", flush=True)
            train_gan.train(run, overrides, log=lambda text: print(f"  {text}", flush=True))
        for checkpoint in reversed(gan_run.checkpoints_newest_first(folder / "ckpt")):
            key = f"{name} @ {gan_run.step_of(checkpoint)}"
            if key in results:
                continue
            with gan_run.Generator(checkpoint=checkpoint, use_ema=use_ema) as generator:
                fake = evaluate_gan.generate_faces(generator, args.num_images, 0)
            results[key] = evaluate_gan.evaluate(fake, real, 0, log=quiet)
            results_path.write_text(json.dumps(results, indent=1))
            print(f"  {key}: SWD avg {results[key]['swd']['avg']:.1f}", flush=True)

    print_table(results, args)
    write_picture(work_dir, args)
    return 0


def print_table(results, args):
    """The Markdown table of the README: SWD per checkpoint, final levels."""
    steps = sorted({int(key.rsplit(" @ ", 1)[1]) for key in results})
    final = steps[-1]
    step_columns = " | ".join(f"SWD avg @ {step}" for step in steps)
    print(f"\n{len(CONFIGS)} configurations, width {args.width}, {args.num_images} "
          f"generated vs {args.num_images} held-out faces; SWD x1e3, lower is better\n")
    print(f"| configuration | {step_columns} | @ {final}: 64 / 32 / 16 px | diversity ratio |")
    print("|---|" + "---|" * (len(steps) + 2))
    floor = None
    for name in CONFIGS:
        cells = [f"{results[f'{name} @ {s}']['swd']['avg']:.1f}"
                 if f"{name} @ {s}" in results else "" for s in steps]
        last = results.get(f"{name} @ {final}")
        if last is None:
            continue
        levels = " / ".join(f"{last['swd'][k]:.1f}" for k in last["swd"] if k != "avg")
        print(f"| {name} | {' | '.join(cells)} | {levels} | "
              f"{last['diversity']['ratio']:.2f} |")
        floor = last["real_vs_real"]
    if floor is not None:
        levels = " / ".join(f"{floor[k]:.1f}" for k in floor if k != "avg")
        repeated = " | ".join(f"{floor['avg']:.1f}" for _ in steps)
        print(f"| real vs real (floor) | {repeated} | {levels} | 1.00 |")


def write_picture(work_dir, args, faces=8):
    """One row of faces per configuration, same z, final checkpoint."""
    rows = []
    for name, (_, use_ema) in CONFIGS.items():
        ckpt_dir = run_folder(work_dir, name) / "ckpt"
        if gan_run.latest_checkpoint(ckpt_dir) is None:
            continue
        with gan_run.Generator(ckpt_dir, use_ema=use_ema) as generator:
            rows.append(generator(generate_face.sample_grid_z(0, faces,
                                                              generator.hparams.z_dim)))
    if rows:
        path = generate_face.save_grid(np.concatenate(rows), work_dir / "levers.png")
        print(f"\nwrote {path}: one row per configuration, in the table's order")


if __name__ == "__main__":
    sys.exit(main())
