"""Training throughput of the real training graph, per precision, and where it goes.

    python bench/train_speed.py                       # fp32 and bf16, default model
    python bench/train_speed.py --rounds 5 --torch    # and the same network in PyTorch
    python bench/train_speed.py --recipe              # bench/race.py's recipe against
                                                      # the pytorch/examples DCGAN
    python bench/train_speed.py --profile 3           # and a per-layer profile
    python bench/train_speed.py --onednn 1,0          # TensorFlow's oneDNN kernels on, off

Builds the graph that train_gan.py trains (gan_model.py's networks, losses
and Adam ops, fed by the real tf.data input), warms up, and times --iters
iterations, each train_gan.train_step (one D and one G update on a batch of
64), for each precision. Rounds are interleaved, so slow spells on a shared
machine hit every configuration alike, and taken in turn forwards and
backwards, so no configuration always runs first; each figure is the
median over rounds. It also prints the analytic FLOP count of one
iteration, the achieved GFLOP/s, and the fp32 and bf16 matrix-multiply
rates measured in the same run, as the rate to compare with. The header
names the machine: CPU, usable cores, the CPU features speed depends on,
TensorFlow's version and whether oneDNN is on.

Every PyTorch model runs in a process of its own (bench/torch_timer.py),
idle while TensorFlow runs: in the same process as a TensorFlow Session,
PyTorch runs about half as fast. Each runs with glibc's default malloc, as
a PyTorch script runs by itself; the rows marked "this repo's malloc" run
the same model with the malloc setting this repo's scripts make
(hardware.keep_freed_memory), which speeds PyTorch up too.

--profile ITERS traces that many iterations of the first precision, one op
at a time, and prints each layer's forward, input gradient and weight
gradient with its share of the step and of the matrix-multiply rate, then
the rest (batch norm, activations, losses, Adam, the EMA, the finiteness
check), the largest single ops of that rest by name, and oneDNN's own time
per primitive kind, reorders included
(bench/step_profile.py). With a PyTorch row to weigh it against (--torch,
or --recipe), it then sets that op time against the step the goal allows
(GOALS: 1.25x the same network in PyTorch, 1.5x the example), and against
the op time with every layer pass at the matrix-multiply rate, and says
which of the two stands in the goal's way.

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

import race  # noqa: E402
import replicas  # noqa: E402
import step_profile  # noqa: E402
import torch_timer  # noqa: E402
import train_gan  # noqa: E402
import training_graph  # noqa: E402
from gan_model import HParams  # noqa: E402

tf1 = tf.compat.v1
# The step time that --profile weighs its op time against, as a multiple of
# a PyTorch row's speed: the default model against the same network in
# PyTorch, and the recipe against the PyTorch example (README, "Speed").
GOALS = {"pytorch fp32": 1.25, "pytorch example": 1.5}
# How many single ops --profile lists from outside the layers' passes.
LARGEST_OPS = 12


def layer_flops(hparams):
    """Forward multiply-add FLOPs per image: {"G linear": flops, ..., "D linear": flops}."""
    h, w, k2 = hparams.output_h // 16, hparams.output_w // 16, hparams.kernel_size ** 2
    flops = {"G linear": 2 * hparams.z_dim * h * w * hparams.gf_dim * 8}
    channels = [hparams.gf_dim * 8, hparams.gf_dim * 4, hparams.gf_dim * 2, hparams.gf_dim, 3]
    for i in range(4):  # a transposed conv costs k*k*Cout per input pixel and channel
        flops[f"G deconv{i + 1}"] = 2 * (h << i) * (w << i) * channels[i] * k2 * channels[i + 1]
    channels = [3, hparams.df_dim, hparams.df_dim * 2, hparams.df_dim * 4, hparams.df_dim * 8]
    for i in range(4):  # output pixels x Cout x k*k*Cin
        out_h, out_w = hparams.output_h >> (i + 1), hparams.output_w >> (i + 1)
        flops[f"D conv{i}"] = 2 * out_h * out_w * channels[i + 1] * k2 * channels[i]
    flops["D linear"] = 2 * h * w * hparams.df_dim * 8
    return flops


def iteration_flops(hparams):
    """FLOPs of one training iteration (a D update, then a G update).

    Each backward pass costs a forward's FLOPs for the weight gradients and
    again for the input gradients, where those are needed:
      D update: G forward; D forward on the real and the fake batch; D
        weight gradients for both; D input gradients for both except at the
        first layer (nothing upstream trains).
      G update: with --schedule classic, G forward again (reuse_fake, the
        default, reuses the D update's); D forward on the fake batch; D input
        gradients including the first layer (they reach G); G weight
        gradients; G input gradients except at the first layer.
    """
    flops = layer_flops(hparams)
    f_g = sum(v for k, v in flops.items() if k.startswith("G "))
    f_d = sum(v for k, v in flops.items() if k.startswith("D "))
    d_update = f_g + 2 * f_d + 2 * f_d + 2 * (f_d - flops["D conv0"])
    g_forward = 0 if hparams.schedule == "reuse_fake" else f_g
    g_update = g_forward + f_d + f_d + f_g + (f_g - flops["G linear"])
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
    """The real training graph in a live Session, stepped as train_gan.py steps it.

    Each `step` is train_gan.train_step: the D and G updates (in one
    Session.run, unless --schedule classic), a new z batch from (seed,
    step), and the finiteness check of the weights. With `summary_dir`,
    every step also fetches the summaries and writes them there
    (train_gan.py does that every --log_every steps only), to show what
    logging costs. `inter_op_threads` overrides TensorFlow's default of
    running independent ops side by side (1: one op at a time).
    """

    def __init__(self, hparams, summary_dir=None, inter_op_threads=None):
        self.hparams, self.step_count = hparams, 0
        images = np.random.default_rng(0).integers(0, 256, (512, hparams.output_h,
                                                            hparams.output_w, 3), np.uint8)
        self.parts = training_graph.build(hparams, images)
        self.cluster = replicas.coordination(self.parts.layout, timeout=300.0)
        with self.parts.graph.as_default():
            self.writer = summary_dir and tf1.summary.FileWriter(summary_dir)
        config = hardware.session_config()
        if inter_op_threads:
            # Pools of its own: by default every Session of a process shares
            # the pools the first one made, with the first one's sizes.
            config.use_per_session_threads = True
            config.inter_op_parallelism_threads = inter_op_threads
        self.sess = tf1.Session(graph=self.parts.graph, config=config)
        self.sess.run(self.parts.init)
        self.sess.run(self.parts.iterator.initializer, {self.parts.start_batch: 0})

    def step(self, sess=None):
        fetched = train_gan.train_step(sess or self.sess, self.parts, self.hparams,
                                       self.step_count, bool(self.writer), self.cluster,
                                       wish=False)
        self.step_count += 1
        if self.writer:
            self.writer.add_summary(fetched["d_summary"])
            self.writer.add_summary(fetched["g_summary"])
        return fetched["d_loss"], fetched["g_loss"]


def seconds_per_iteration(runner, iters):
    if hasattr(runner, "seconds_per_iteration"):  # timed in its own process
        return runner.seconds_per_iteration(iters)
    started = time.perf_counter()
    for _ in range(iters):
        runner.step()
    return (time.perf_counter() - started) / iters


def alternating(names, round_index):
    """`names` in order on even rounds and reversed on odd ones: in a fixed
    order the second of two graphs timed in one process ran about 3% faster
    than the first, whichever graph it was."""
    names = list(names)
    return names if round_index % 2 == 0 else names[::-1]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--precisions", default=None,
                        help="comma-separated (default: fp32, and bf16 where it is native "
                             "here; emulated bf16 takes many times as long)")
    parser.add_argument("--gf_dim", type=int, default=64)
    parser.add_argument("--df_dim", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--train_flags", default="",
                        help="more train_gan.py hyperparameter flags, in one string "
                             "(e.g. \"--kernel_size 4 --flip\")")
    parser.add_argument("--recipe", action="store_true",
                        help="time bench/race.py's recipe at the race's half width against "
                             "the pytorch/examples DCGAN (bench/torch_dcgan.py, needs PyTorch)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--summaries", action="store_true",
                        help="also time fp32 with every summary written every step")
    parser.add_argument("--torch", action="store_true",
                        help="also time bench/torch_reference.py, the same network in "
                             "PyTorch (needs PyTorch)")
    parser.add_argument("--profile", type=int, default=0, metavar="ITERS",
                        help="after timing, trace ITERS iterations of the first precision "
                             "and print where the time goes, per layer and pass")
    parser.add_argument("--onednn", default="",
                        help="comma-separated TF_ENABLE_ONEDNN_OPTS values (e.g. 1,0) to time "
                             "one after the other, each in its own process")
    parser.add_argument("--json_out", default="", help="also write {row: images/s} here")
    parser.add_argument("--onednn_log_marker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.recipe:
        args.gf_dim = args.df_dim = race.WIDTH
        args.train_flags = " ".join(race.RECIPE) + " " + args.train_flags
    if args.precisions is None:
        native, why = hardware.native_bf16()
        args.precisions = "fp32,bf16" if native else "fp32"
        if not native:
            print(f"bf16 not timed ({why}); --precisions fp32,bf16 times it anyway")
    if "bf16" in args.precisions.split(","):
        try:  # e.g. ONEDNN_MAX_CPU_ISA=AVX2, where oneDNN has no bf16 kernels
            hardware.resolve_precision("bf16")
        except ValueError as error:
            print(f"bf16 not timed: {error}")
            args.precisions = ",".join(p for p in args.precisions.split(",") if p != "bf16")
            if not args.precisions:
                parser.error("no precision left to time: add fp32 to --precisions")
    return args


def hparams_of(args, precision="fp32"):
    _, overrides = train_gan.parse_flags([
        "--gf_dim", str(args.gf_dim), "--df_dim", str(args.df_dim),
        "--batch_size", str(args.batch_size), "--precision", precision,
        *args.train_flags.split()])
    return HParams(**overrides)


def torch_runners(args, hparams):
    """The PyTorch yardsticks asked for, by row name, each timed in a process
    of its own (bench/torch_timer.py); {} without PyTorch."""
    import importlib.util
    if not (args.torch or args.recipe):
        return {}
    if importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: the PyTorch rows are skipped")
        return {}
    models = {}  # row name: (model, whether malloc keeps freed memory as in this repo)
    if args.torch:  # the same schedule as this repo's rows
        schedule = "-classic" if hparams.schedule == "classic" else ""
        models["pytorch fp32"] = ("reference" + schedule, False)
        if hardware.native_bf16()[0]:  # emulated bf16 takes many times as long
            models["pytorch bf16 autocast"] = ("reference-bf16" + schedule, False)
        models["pytorch fp32, this repo's malloc"] = ("reference" + schedule, True)
    if args.recipe:
        models.update({"pytorch example": ("example", False),
                       "pytorch example, this repo's malloc": ("example", True)})
    runners = {name: torch_timer.TorchTimer(model, args.batch_size, hparams.z_dim,
                                            args.gf_dim, args.df_dim, keep)
               for name, (model, keep) in models.items()}
    print(next(iter(runners.values())).version + ", each model in a process of its own")
    return runners


def main(argv=None):
    args = parse_args(argv)
    if args.onednn:
        return compare_onednn(args, argv if argv is not None else sys.argv[1:])
    if args.onednn_log_marker:
        return onednn_log_child(args)

    base = hparams_of(args)
    runners = {f"tensorflow {p}": TensorFlowRun(hparams_of(args, p))
               for p in args.precisions.split(",")}
    scratch = tempfile.TemporaryDirectory()
    if args.summaries:
        runners["tensorflow fp32 + summaries every step"] = TensorFlowRun(base, scratch.name)
    runners.update(torch_runners(args, base))
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()

    times = {name: [] for name in runners}
    dtypes = {"fp32": tf.float32, "bf16": tf.bfloat16}
    # fp32 always: it is the yardstick of every row not in bf16, the example's too.
    rate_samples = {name: [] for name in dtypes
             if name == "fp32" or any(name in row for row in runners)}
    for round_index in range(args.rounds):
        for name in alternating(runners, round_index):
            times[name].append(seconds_per_iteration(runners[name], args.iters))
        for name, rates in rate_samples.items():
            rates.append(matmul_rate(dtypes[name]))
    matmul_rates = {name: statistics.median(rates) for name, rates in rate_samples.items()}
    print_speeds(args, base, times, matmul_rates)
    if args.profile:
        first = next(iter(runners.values()))
        reference = next((name for name in GOALS if name in times), None)
        profile(args, first.hparams, matmul_rates["bf16" if first.hparams.precision == "bf16"
                                                    else "fp32"],
                reference and (reference, statistics.median(times[reference]),
                               statistics.median(times[next(iter(runners))])))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {name: args.batch_size / statistics.median(seconds)
             for name, seconds in times.items()}))
    return 0


def print_speeds(args, base, times, matmul_rates):
    flops = iteration_flops(base)
    print(hardware.describe())
    print(f"gf_dim {args.gf_dim}, df_dim {args.df_dim}, batch {args.batch_size}"
          + (f", {args.train_flags.strip()}" if args.train_flags.strip() else "")
          + f"; median of {args.rounds} interleaved rounds x {args.iters} iterations")
    print(f"one iteration = {flops / 1e9:.1f} GFLOP (analytic); matrix multiply measured: "
          + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in matmul_rates.items()) + "\n")
    reference = next((n for n in ("pytorch fp32", "pytorch example") if n in times), None)
    print(f"{'':38s} {'images/s':>9s} {'s/iter':>8s} {'GFLOP/s':>8s} {'of matmul':>9s}"
          + (f"  vs {reference}" if reference else ""))
    for name, seconds in times.items():
        median = statistics.median(seconds)
        line = f"{name:38s} {args.batch_size / median:9.1f} {median:8.3f} "
        # At kernel size 4 the example's layers have this repo's shapes (its 1x1
        # transposed convolution and convolution are G's and D's linear layers),
        # and it runs G once per iteration as reuse_fake does: this count is its
        # FLOPs too. Otherwise the row has none.
        same_work = base.kernel_size == 4 and base.schedule == "reuse_fake"
        if not name.startswith("pytorch example") or same_work:
            dtype = "bf16" if "bf16" in name else "fp32"
            line += f"{flops / median / 1e9:8.0f} {flops / median / 1e9 / matmul_rates[dtype]:9.0%}"
        else:
            line += f"{'':8s} {'':9s}"
        if reference:
            line += f"  {statistics.median(times[reference]) / median:6.2f}x"
        print(line)


def profile(args, hparams, matmul_rate_gflops, reference=None):
    """Trace --profile iterations one op at a time and print where the time
    went; then, given `reference` (a GOALS name, its seconds per iteration,
    and the profiled step's), how that op time stands against the goal."""
    runner = TensorFlowRun(hparams, inter_op_threads=1)
    for _ in range(args.warmup):
        runner.step()
    traced = step_profile.TracedSession(runner.sess)
    for _ in range(args.profile):
        runner.step(traced)
    print(f"\nwhere the time goes ({hparams.precision}, {args.profile} traced iterations):")
    groups = traced.groups(args.profile)
    step_profile.print_table(traced.wall / args.profile, groups,
                             layer_flops(hparams), hparams.batch_size, matmul_rate_gflops)
    step_profile.print_largest(traced.largest_outside_layers(args.profile, LARGEST_OPS))
    if reference:
        name, reference_seconds, step_seconds = reference
        step_profile.print_goal(GOALS[name], name, reference_seconds, step_seconds,
                                step_profile.goal_bound(
            groups, layer_flops(hparams), hparams.batch_size, matmul_rate_gflops))
    marker = "-- oneDNN log from here --"
    command = [sys.executable, __file__, "--onednn_log_marker", marker,
               "--precisions", hparams.precision, "--gf_dim", str(args.gf_dim),
               "--df_dim", str(args.df_dim), "--batch_size", str(args.batch_size),
               # "=" keeps a value that starts with "--" (e.g. "--flip") a value.
               f"--train_flags={args.train_flags}", "--profile", str(args.profile),
               "--warmup", str(args.warmup)]
    kinds = step_profile.onednn_primitives(command, marker)
    total = sum(kinds.values())
    print(f"\noneDNN primitives per iteration, one op at a time (ONEDNN_VERBOSE=1, "
          f"{total / args.profile:.1f} ms in all):")
    for kind, milliseconds in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"  {kind:36s} {milliseconds / args.profile:8.1f} ms {milliseconds / total:6.1%}")


def onednn_log_child(args):
    """The child of `profile`: warm up, print the marker, run --profile iterations."""
    runner = TensorFlowRun(hparams_of(args, args.precisions.split(",")[0]),
                           inter_op_threads=1)
    for _ in range(args.warmup):
        runner.step()
    print(args.onednn_log_marker, flush=True)
    for _ in range(args.profile):
        runner.step()
    sys.stdout.flush()
    os._exit(0)  # skip the teardown's log lines and the input thread's shutdown


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
