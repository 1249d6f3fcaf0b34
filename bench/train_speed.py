"""Training throughput of the real training graph, per precision.

    python bench/train_speed.py                       # fp32 and bf16, default model
    python bench/train_speed.py --rounds 5 --torch    # and a PyTorch yardstick
    python bench/train_speed.py --onednn 1,0          # TensorFlow's oneDNN kernels on, off

Builds the graph that train_gan.py trains (gan_model.py's networks, losses
and Adam ops, fed by the real tf.data input), warms up, and times --iters
iterations (one D and one G update on a batch of 64) for each precision.
Rounds are interleaved, so slow spells on a shared machine hit every
configuration alike; each figure is the median over rounds. It also prints
the analytic FLOP count of one iteration, the achieved GFLOP/s, and the
fp32 and bf16 matrix-multiply rates measured in the same run, as the peak
to compare with. The header names the machine: CPU, usable cores, the CPU
features speed depends on, TensorFlow's version and whether oneDNN is on.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads, so --onednn
times each setting in a child process of its own, one after the other, and
then sets their figures side by side.
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

import generate_face  # noqa: E402
import training_graph  # noqa: E402
from gan_model import HParams  # noqa: E402

tf1 = tf.compat.v1


def layer_flops(hparams):
    """Forward multiply-add FLOPs per image: ({G layer: flops}, {D layer: flops})."""
    h, w, k2 = hparams.output_h // 16, hparams.output_w // 16, hparams.kernel_size ** 2
    gen = {"linear": 2 * hparams.z_dim * h * w * hparams.gf_dim * 8}
    channels = [hparams.gf_dim * 8, hparams.gf_dim * 4, hparams.gf_dim * 2, hparams.gf_dim, 3]
    for i in range(4):  # a transposed conv costs k*k*Cout per input pixel and channel
        gen[f"deconv{i + 1}"] = 2 * (h << i) * (w << i) * channels[i] * k2 * channels[i + 1]
    dis = {}
    channels = [3, hparams.df_dim, hparams.df_dim * 2, hparams.df_dim * 4, hparams.df_dim * 8]
    for i in range(4):  # output pixels x Cout x k*k*Cin
        out_h, out_w = hparams.output_h >> (i + 1), hparams.output_w >> (i + 1)
        dis[f"conv{i}"] = 2 * out_h * out_w * channels[i + 1] * k2 * channels[i]
    dis["linear"] = 2 * h * w * hparams.df_dim * 8
    return gen, dis


def iteration_flops(hparams):
    """FLOPs of one training iteration (a D update, then a G update).

    Each backward pass costs a forward's FLOPs for the weight gradients and
    again for the input gradients, where those are needed:
      D update: G forward; D forward on the real and the fake batch; D
        weight gradients for both; D input gradients for both except at the
        first layer (nothing upstream trains).
      G update: G forward again; D forward on the fake batch; D input
        gradients including the first layer (they reach G); G weight
        gradients; G input gradients except at the first layer.
    """
    gen, dis = layer_flops(hparams)
    f_g, f_d = sum(gen.values()), sum(dis.values())
    d_update = f_g + 2 * f_d + 2 * f_d + 2 * (f_d - dis["conv0"])
    g_update = f_g + f_d + f_d + f_g + (f_g - gen["linear"])
    return hparams.batch_size * (d_update + g_update)


def matmul_rate(dtype, size=2048, repeats=10):
    """Achieved GFLOP/s of a square matrix multiply in this dtype."""
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.uniform([size, size], dtype=tf.float32))
        b = tf.Variable(tf.random.uniform([size, size], dtype=tf.float32))
        product = tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype))
        total = tf.reduce_sum(tf.cast(product, tf.float32))
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(total)
            started = time.perf_counter()
            for _ in range(repeats):
                sess.run(total)
            elapsed = (time.perf_counter() - started) / repeats
    return 2 * size ** 3 / elapsed / 1e9


class TensorFlowRun:
    """The real training graph in a live Session, ready to time.

    With `summary_dir`, every step also fetches the scalar and histogram
    summaries and writes them there (train_gan.py does that every
    --log_every steps only), to show what logging costs.
    """

    def __init__(self, hparams, summary_dir=None):
        self.hparams = hparams
        images = np.random.default_rng(0).integers(0, 256, (512, hparams.output_h,
                                                            hparams.output_w, 3), np.uint8)
        self.parts = training_graph.build(hparams, images)
        with self.parts.graph.as_default():
            self.writer = summary_dir and tf1.summary.FileWriter(summary_dir)
        self.sess = tf1.Session(graph=self.parts.graph, config=hardware.session_config())
        self.sess.run(self.parts.init)
        self.sess.run(self.parts.iterator.initializer, {self.parts.start_batch: 0})
        self.feed = {self.parts.z: generate_face.train_z(0, 0, hparams.batch_size,
                                                         hparams.z_dim)}

    def step(self):
        parts = self.parts
        if self.writer:
            d_out = self.sess.run([parts.d_train_op, parts.gan.d_loss, parts.d_summary],
                                  self.feed)
            g_out = self.sess.run([parts.g_train_op, parts.gan.g_loss, parts.g_summary,
                                   parts.weights_finite], self.feed)
            self.writer.add_summary(d_out[2])
            self.writer.add_summary(g_out[2])
            return d_out[1], g_out[1]
        d_loss = self.sess.run([parts.d_train_op, parts.gan.d_loss], self.feed)[1]
        # As in training: the G step also checks the weights for NaN.
        g_loss = self.sess.run([parts.g_train_op, parts.gan.g_loss, parts.weights_finite],
                               self.feed)[1]
        return d_loss, g_loss


def seconds_per_iteration(runner, iters):
    started = time.perf_counter()
    for _ in range(iters):
        runner.step()
    return (time.perf_counter() - started) / iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--gf_dim", type=int, default=64)
    parser.add_argument("--df_dim", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--summaries", action="store_true",
                        help="also time fp32 with every summary written every step")
    parser.add_argument("--torch", action="store_true",
                        help="also time bench/torch_reference.py (needs PyTorch)")
    parser.add_argument("--onednn", default="",
                        help="comma-separated TF_ENABLE_ONEDNN_OPTS values (e.g. 1,0) to time "
                             "one after the other, each in its own process")
    parser.add_argument("--json_out", default="", help="also write {row: images/s} here")
    args = parser.parse_args(argv)
    if args.onednn:
        return compare_onednn(args, argv if argv is not None else sys.argv[1:])

    base = HParams(gf_dim=args.gf_dim, df_dim=args.df_dim, batch_size=args.batch_size)
    runners = {f"tensorflow {p}": TensorFlowRun(HParams(**{**base.to_dict(), "precision": p}))
               for p in args.precisions.split(",")}
    scratch = tempfile.TemporaryDirectory()
    if args.summaries:
        runners["tensorflow fp32 + summaries every step"] = TensorFlowRun(base, scratch.name)
    if args.torch:
        try:
            import torch
            from torch_reference import TorchDCGAN
        except ImportError:
            print("PyTorch is not installed: --torch skipped")
        else:
            runners["pytorch fp32"] = TorchDCGAN(args.batch_size, base.z_dim, args.gf_dim,
                                                 args.df_dim)
            runners["pytorch bf16 autocast"] = TorchDCGAN(args.batch_size, base.z_dim,
                                                          args.gf_dim, args.df_dim, bf16=True)
            print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()

    times = {name: [] for name in runners}
    peaks = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            times[name].append(seconds_per_iteration(runner, args.iters))
        peaks["fp32"].append(matmul_rate(tf.float32))
        peaks["bf16"].append(matmul_rate(tf.bfloat16))

    flops = iteration_flops(base)
    peak = {name: statistics.median(rates) for name, rates in peaks.items()}
    print(hardware.describe())
    print(f"gf_dim {args.gf_dim}, df_dim {args.df_dim}, batch {args.batch_size}; median of "
          f"{args.rounds} interleaved rounds x {args.iters} iterations")
    print(f"one iteration = {flops / 1e9:.1f} GFLOP (analytic); matrix multiply measured: "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s\n")
    reference = next((statistics.median(times[n]) for n in times if n == "pytorch fp32"), None)
    print(f"{'':38s} {'images/s':>9s} {'s/iter':>8s} {'GFLOP/s':>8s} {'of peak':>8s}"
          + ("  vs pytorch fp32" if reference else ""))
    for name, seconds in times.items():
        median = statistics.median(seconds)
        dtype = "bf16" if "bf16" in name else "fp32"
        line = (f"{name:38s} {args.batch_size / median:9.1f} {median:8.3f} "
                f"{flops / median / 1e9:8.0f} {flops / median / 1e9 / peak[dtype]:7.0%}")
        if reference:
            line += f"  {reference / median:6.2f}x"
        print(line)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {name: args.batch_size / statistics.median(seconds)
             for name, seconds in times.items()}))
    return 0


def compare_onednn(args, argv):
    """Run this benchmark once per --onednn value, then compare the figures."""
    rest, skip = [], False
    for arg in argv:  # the same flags, less --onednn
        if skip:
            skip = False
        elif arg == "--onednn":
            skip = True
        elif not arg.startswith("--onednn="):
            rest.append(arg)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for value in args.onednn.split(","):
            out = Path(scratch) / f"onednn{value}.json"
            print(f"--- {hardware.ONEDNN_VARIABLE}={value}", flush=True)
            env = {**os.environ, hardware.ONEDNN_VARIABLE: value}
            subprocess.run([sys.executable, __file__, *rest, "--json_out", str(out)],
                           env=env, check=True)
            results[value] = json.loads(out.read_text())
            print(flush=True)
    values = list(results)
    print(f"images/s by {hardware.ONEDNN_VARIABLE}:")
    print(f"{'':38s}" + "".join(f" {v:>9s}" for v in values)
          + (f"  {values[0]} vs {values[1]}" if len(values) == 2 else ""))
    for name in results[values[0]]:
        rates = [results[v].get(name, float("nan")) for v in values]
        line = f"{name:38s}" + "".join(f" {rate:9.1f}" for rate in rates)
        if len(values) == 2:
            line += f"  {rates[0] / rates[1]:6.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
