"""Data-parallel scaling: images/s with 1, 2 and 4 replicas, and 2 workers.

    python bench/scaling.py                        # half width, replicas 1,2,4 and 2 workers
    python bench/scaling.py --width 64 --iters 20  # the default model
    python bench/scaling.py --replicas "" --g_ema_decay 0.999  # 2 workers, G's EMA on

Times the real training graph (training_graph.build) with
--batch_size images per replica:

  replicas N   N logical CPU devices in this process (MirroredStrategy), the
               code path of --devices N on a machine without GPUs;
  2 workers    two train_gan-style child processes on 127.0.0.1 under
               TF_CONFIG (MultiWorkerMirroredStrategy), one replica each.

It also times the all-reduce alone, on tensors shaped like the gradients of
one iteration (both networks), in the same layouts. On one CPU every layout
shares the same cores, so these figures show the cost of the replication,
not a speed-up; the last table models the speed-up to expect on 8 GPUs and
on 2 machines from the gradient size per step and the link speed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import replicas  # noqa: E402
import training_graph  # noqa: E402
from gan_model import HParams, ganModel  # noqa: E402

tf1 = tf.compat.v1


def gradient_shapes(hparams):
    """Shapes of every trainable variable: one iteration all-reduces a
    gradient of each (D's in the D update, G's in the G update)."""
    with tf.Graph().as_default():
        model = ganModel(hparams)
        model.build_model(tf.zeros([1, hparams.output_h, hparams.output_w, 3]),
                          tf.zeros([1, hparams.z_dim]))
        return [v.shape.as_list() for v in tf1.trainable_variables()]


def time_training(hparams, images, layout, iters, warmup, session_target=None):
    """Median seconds of one iteration (D update, then G update)."""
    parts = training_graph.build(hparams, images, layout=layout)
    config = replicas.session_config(layout, parts.strategy)
    target = session_target(config) if session_target else ""
    with tf1.Session(target, graph=parts.graph, config=config) as sess:
        sess.run(parts.init)
        sess.run(parts.iterator.initializer, {parts.start_batch: 0})
        z = np.random.default_rng(0).uniform(
            -1, 1, (hparams.batch_size * layout.replicas, hparams.z_dim)).astype(np.float32)
        times = []
        for i in range(warmup + iters):
            started = time.perf_counter()
            for ops in training_graph.update_runs(parts, hparams.schedule):
                sess.run(ops, {parts.z: z})
            if i >= warmup:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_allreduce(shapes, layout, iters, warmup, session_target=None):
    """Median seconds of one all-reduce of gradient-shaped tensors over the
    layout's replicas."""
    graph = tf.Graph()
    with graph.as_default():
        strategy = replicas.make_strategy(layout)
        with strategy.scope():
            # Variables, so that the timing holds the reduction alone (not
            # the making of the tensors); each replica reads its own copy.
            gradients = [tf1.get_variable(f"gradient_{i}", shape, initializer=tf1.ones_initializer())
                         for i, shape in enumerate(shapes)]

            copies = strategy.extended.call_for_each_replica(
                lambda: [tf.identity(g) for g in gradients])
            # As the optimizers reduce gradients: onto the variables' devices.
            op = strategy.group(strategy.extended.batch_reduce_to(
                tf.distribute.ReduceOp.SUM, list(zip(copies, gradients))))
            init = tf1.global_variables_initializer()
    config = replicas.session_config(layout, strategy)
    target = session_target(config) if session_target else ""
    with tf1.Session(target, graph=graph, config=config) as sess:
        sess.run(init)
        times = []
        for i in range(warmup + iters):
            started = time.perf_counter()
            sess.run(op)
            if i >= warmup:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_workers(args, measurement):
    """Time 2 workers on 127.0.0.1: two children of this script; the chief's figure.

    Each measurement gets processes of its own: a worker's collective ops
    are keyed per process, and a second graph in the same one would reuse
    the first one's keys.
    """
    workers = replicas.loopback_workers(2)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "chief.json"
        children = []
        for index in range(2):
            env = {**os.environ, replicas.TF_CONFIG: json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
            flags = [sys.executable, __file__, "--as_worker", measurement,
                     "--width", str(args.width), "--batch_size", str(args.batch_size),
                     "--iters", str(args.iters), "--warmup", str(args.warmup),
                     "--g_ema_decay", str(args.g_ema_decay), "--json_out", str(out)]
            children.append(subprocess.Popen(flags, env=env))
        for child in children:
            if child.wait(timeout=1800) != 0:
                raise SystemExit(f"a worker failed (exit {child.returncode})")
        return json.loads(out.read_text())


def row(hparams, layout, step, reduce):
    return {"replicas": layout.replicas, "step_s": step,
            "images_per_sec": hparams.batch_size * layout.replicas / step,
            "allreduce_s": reduce}


def as_worker(hparams, images, args):
    """One worker of a 2-worker measurement (started by run_workers)."""
    layout = replicas.plan("auto")

    def target(config):
        return replicas.worker_server(layout, config).target

    if args.as_worker == "training":
        seconds = time_training(hparams, images, layout, args.iters, args.warmup, target)
    else:
        seconds = time_allreduce(gradient_shapes(hparams), layout, args.iters, args.warmup,
                                 target)
    if layout.is_chief:
        Path(args.json_out).write_text(json.dumps(seconds))


def speedup_model(gradient_bytes):
    """Markdown: the speed-up a ring all-reduce allows, from the gradient
    size, an assumed compute time per iteration and a link bandwidth."""
    rows = [
        ("8 GPUs, NVLink (~150 GB/s per GPU)", 8, 150e9),
        ("8 GPUs, PCIe 4.0 x16 (~25 GB/s)", 8, 25e9),
        ("2 machines, 100 Gb/s Ethernet (12.5 GB/s)", 2, 12.5e9),
        ("2 machines, 10 Gb/s Ethernet (1.25 GB/s)", 2, 1.25e9),
    ]
    lines = ["| setup | all-reduce per iteration | speed-up if an iteration computes "
             "in 10 ms | in 50 ms |", "|---|---|---|---|"]
    for name, count, bandwidth in rows:
        # A ring all-reduce moves 2 (N - 1) / N of the data over each link.
        reduce = 2 * (count - 1) / count * gradient_bytes / bandwidth
        cells = [f"{count * compute / (compute + reduce):.1f}x" for compute in (0.010, 0.050)]
        lines.append(f"| {name} | {reduce * 1e3:.1f} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--width", type=int, default=32, help="--gf_dim and --df_dim")
    parser.add_argument("--batch_size", type=int, default=64, help="images per replica")
    parser.add_argument("--replicas", default="1,2,4", help="logical CPU device counts")
    parser.add_argument("--workers", type=int, choices=(0, 2), default=2,
                        help="also time 2 local workers (0: skip)")
    parser.add_argument("--g_ema_decay", type=float, default=0.0,
                        help="train_gan.py's --g_ema_decay (the recipe's: 0.999); 0: no EMA")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json_out", default="", help="also write the figures as JSON")
    parser.add_argument("--as_worker", choices=("training", "allreduce"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")

    hparams = HParams(gf_dim=args.width, df_dim=args.width, batch_size=args.batch_size,
                      g_ema_decay=args.g_ema_decay)
    counts = [int(n) for n in args.replicas.split(",") if n]
    largest = max(counts + [args.workers]) * args.batch_size
    images = np.random.default_rng(0).integers(0, 256, (largest, 64, 64, 3), dtype=np.uint8)
    if args.as_worker:
        return as_worker(hparams, images, args)

    print(hardware.describe())
    print(f"model: gf_dim = df_dim = {args.width}, {args.batch_size} images per replica, "
          f"--g_ema_decay {args.g_ema_decay}; median of {args.iters} iterations after "
          f"{args.warmup}")
    rows = []
    for count in counts:
        layout = replicas.plan(count, environ={}, gpus=0)
        step = time_training(hparams, images, layout, args.iters, args.warmup)
        reduce = time_allreduce(gradient_shapes(hparams), layout, args.iters, args.warmup)
        rows.append(("logical CPU devices", row(hparams, layout, step, reduce)))
        print(f"  {count} replica(s): {rows[-1][1]['images_per_sec']:.1f} images/s", flush=True)
    if args.workers:
        cluster = replicas.Layout(cluster={"worker": ["", ""]})
        rows.append(("workers on 127.0.0.1", row(
            hparams, cluster, run_workers(args, "training"), run_workers(args, "allreduce"))))
    print("\n| layout | replicas | images/s | iteration | all-reduce of the gradients |")
    print("|---|---|---|---|---|")
    for kind, figures in rows:
        print(f"| {kind} | {figures['replicas']} | {figures['images_per_sec']:.1f} | "
              f"{figures['step_s'] * 1e3:.0f} ms | {figures['allreduce_s'] * 1e3:.1f} ms |")

    full = HParams()
    gradient_bytes = 4 * sum(int(np.prod(s)) for s in gradient_shapes(full))
    print(f"\nThe default model (width 64) all-reduces {gradient_bytes / 1e6:.1f} MB of "
          f"float32 gradients per iteration. Modelled speed-up (no overlap of compute "
          f"and communication):\n")
    print(speedup_model(gradient_bytes))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"machine": hardware.describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
