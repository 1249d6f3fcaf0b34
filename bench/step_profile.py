"""Where a training step's time goes, per layer and per pass, from a step trace.

Used by `bench/train_speed.py --profile`. It traces training iterations with
TensorFlow's step statistics (RunOptions FULL_TRACE; the TensorBoard
profiler reads the same records) and sorts every op into a group:

  G linear, G deconv1-4, D conv0-3, D linear   x   forward, input gradient,
                                                  weight gradient
  batch norm (both directions), activations, losses, Adam, G's EMA, the
  finiteness check, and the rest (casts, reshapes, the input pipeline).

Convolutions get their GFLOP/s from the analytic count of
bench/train_speed.py: a forward, an input gradient and a weight gradient of
one layer each cost the layer's forward multiply-adds.

The trace is taken in a Session that runs one op at a time
(inter_op_parallelism_threads=1), so that each op's time is the time it
holds the whole CPU and the groups add up to the step; with TensorFlow's
default of running independent ops side by side, two ops share the cores
and each one's time doubles. The timed figures of train_speed.py use the
default.

oneDNN converts tensors between TensorFlow's layouts and its own blocked
ones inside its kernels, so a trace shows those reorders as part of the
convolutions. `onednn_primitives` counts them apart: it reads oneDNN's own
log (ONEDNN_VERBOSE=1) of a child process.
"""

import collections
import re
import subprocess
import sys
import time

import tensorflow as tf

tf1 = tf.compat.v1
TRACE = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)

LAYER = re.compile(r"(generator|discriminator)(?:_\d+)?/(deconv\d|conv\d|linear|bn\d)/")
# The first leaky ReLU of D is fused with conv0 and its bias by grappler;
# the fused op keeps the activation's name, outside conv0's scope.
FUSED_FIRST_LAYER = re.compile(r"^discriminator(?:_\d+)?/LeakyRelu$")
# Ops that serve a layer's matrix multiply or convolution (the patch matrix
# multiplies' gathers of patches and overlap-add, the sub-pixel
# convolutions' kernel gather, padding and depth-to-space, layers.py):
# part of the layer's pass, not calls of their own.
# With oneDNN on, TensorFlow runs some of them as its own kernels, whose
# types carry a "_Mkl" or "_MklNative" prefix (the depth-to-space's Transpose).
LAYOUT_OPS = re.compile(
    r"(?:_Mkl(?:Native)?)?(?:DepthToSpace|Pad|GatherV2|Transpose|StridedSlice|AddN|ConcatV2)")
# And every op of an overlap-add: its indices, and in bf16 its Sum.
OVERLAP_ADD = re.compile(r"/overlap_add/")
NETWORK_NAMES = {"generator": "G", "discriminator": "D"}
PASSES = ("forward", "input gradient", "weight gradient")


def op_group(name, op_type):
    """(group, pass) of one traced op; pass is None outside the layers' math."""
    match = LAYER.search(name)
    layer = f"{NETWORK_NAMES[match.group(1)]} {match.group(2)}" if match else None
    if FUSED_FIRST_LAYER.match(name) and "Conv2D" in op_type:
        layer = "D conv0"
    gradient = name.startswith("gradients")
    if "bias_gradient" in name:  # layers.py names its bias sums, some a MatMul
        return (f"{layer} bias" if layer else "bias"), None
    if re.search(r"Conv2D|MatMul", op_type) or (layer and serves_a_layer(name, op_type)):
        if layer is None:
            return "other", None
        if not gradient:
            return layer, "forward"
        # conv2d_transpose is an input gradient on the way forward, so its
        # own gradients are a Conv2D (to its input) and a filter gradient.
        # The patch matrix multiplies name theirs (layers.py).
        if ("BackpropFilter" in op_type or "weight_gradient" in name
                or name.endswith("MatMul_1")):
            return layer, "weight gradient"
        return layer, "input gradient"
    if "BatchNorm" in op_type:
        return "batch norm", None
    if "Adam" in op_type:
        return "Adam", None
    if "generator_ema" in name or name.startswith("g_ema_update"):
        return "G's EMA", None
    if name.startswith("finiteness_check"):
        return "finiteness check", None
    if re.search(r"Relu|Tanh|Sigmoid", op_type):
        return "activations", None
    if "logistic_loss" in name or re.search(r"Log1p|Exp|Mean", op_type):
        return "losses", None
    if "Bias" in op_type:
        return (f"{layer} bias" if layer else "bias"), None
    return "other", None


def serves_a_layer(name, op_type):
    """True for the ops that LAYOUT_OPS and OVERLAP_ADD count in a layer's pass."""
    return bool(LAYOUT_OPS.fullmatch(op_type) or OVERLAP_ADD.search(name))


class TracedSession:
    """A Session that traces every run: pass it where a Session is expected.

    `groups(iterations)` then gives {(group, pass): [op seconds, op calls]}
    per iteration, `largest_outside_layers` the single ops that cost most
    outside the layers' passes, and `wall` the seconds its runs took in all.
    """

    def __init__(self, sess):
        self.sess, self.wall, self.step_stats = sess, 0.0, []

    def run(self, fetches, feed_dict=None, options=None):
        del options  # replaced by the trace's (a one-worker run has none)
        metadata = tf1.RunMetadata()
        started = time.perf_counter()
        fetched = self.sess.run(fetches, feed_dict, options=TRACE, run_metadata=metadata)
        self.wall += time.perf_counter() - started
        self.step_stats.append(metadata.step_stats)
        return fetched

    def traced_ops(self):
        """(name, type, seconds) of every op of every traced run."""
        for step_stats in self.step_stats:
            for device in step_stats.dev_stats:
                for node in device.node_stats:
                    op_type = node.timeline_label.split(" = ")[-1].split("(")[0].strip()
                    seconds = (node.op_end_rel_micros - node.op_start_rel_micros) / 1e6
                    yield node.node_name, op_type, seconds

    def groups(self, iterations):
        totals = collections.defaultdict(lambda: [0.0, 0])
        for name, op_type, seconds in self.traced_ops():
            group = op_group(name, op_type)
            entry = totals[group]
            entry[0] += seconds
            entry[1] += not (group[1] and serves_a_layer(name, op_type))
        return {key: [seconds / iterations, calls / iterations]
                for key, (seconds, calls) in totals.items()}

    def largest_outside_layers(self, iterations, count):
        """The `count` ops outside the layers' passes (batch norm, casts,
        activations, Adam...) with the most seconds per iteration, as
        (seconds, group, type, name): where a profile's "rest" comes from,
        op by op (a cast the graph need not make shows up here by name)."""
        totals = collections.defaultdict(float)
        for name, op_type, seconds in self.traced_ops():
            group, pass_name = op_group(name, op_type)
            if not pass_name:
                totals[group, op_type, name] += seconds / iterations
        return sorted(((seconds, *key) for key, seconds in totals.items()),
                      reverse=True)[:count]


def print_table(wall, groups, layer_flops, batch_size, matmul_rate_gflops):
    """The profile as a table: layers by pass, then the rest, with shares."""
    total = sum(seconds for seconds, _ in groups.values())
    print(f"op time per iteration {total * 1e3:.1f} ms (one op at a time); "
          f"the traced iteration took {wall * 1e3:.1f} ms")
    print(f"{'group':22s} {'pass':16s} {'calls':>5s} {'ms':>7s} {'share':>6s} "
          f"{'GFLOP/s':>8s} {'of matmul':>9s}")
    layers = [name for name in layer_flops]
    for layer in layers:
        for pass_name in PASSES:
            seconds, calls = groups.get((layer, pass_name), (0.0, 0))
            if not calls:
                continue
            rate = calls * batch_size * layer_flops[layer] / seconds / 1e9
            print(f"{layer:22s} {pass_name:16s} {calls:5.0f} {seconds * 1e3:7.1f} "
                  f"{seconds / total:6.1%} {rate:8.0f} {rate / matmul_rate_gflops:9.0%}")
    layer_seconds = sum(groups.get((layer, p), (0.0, 0))[0] for layer in layers for p in PASSES)
    layer_work = sum(groups.get((layer, p), (0.0, 0))[1] * batch_size * layer_flops[layer]
                     for layer in layers for p in PASSES)
    rate = layer_work / layer_seconds / 1e9
    print(f"{'all layers':22s} {'':16s} {'':5s} {layer_seconds * 1e3:7.1f} "
          f"{layer_seconds / total:6.1%} {rate:8.0f} {rate / matmul_rate_gflops:9.0%}")
    rest = sorted(((seconds, key[0], calls) for key, (seconds, calls) in groups.items()
                   if key[0] not in layers), reverse=True)
    for seconds, group, calls in rest:
        print(f"{group:22s} {'':16s} {calls:5.0f} {seconds * 1e3:7.1f} {seconds / total:6.1%}")


def print_largest(ops):
    """TracedSession.largest_outside_layers, a line each."""
    print("\nthe largest ops outside the layers, ms per iteration:")
    for seconds, group, op_type, name in ops:
        print(f"  {seconds * 1e3:6.2f}  {group:18s} {op_type:30s} {name}")


def goal_bound(groups, layer_flops, batch_size, matmul_rate_gflops):
    """The op time of one iteration, and what it would be with faster layers.

    Returns (op seconds, the layer passes' seconds, the layer passes'
    seconds with each pass at the matrix-multiply rate or at its own time
    where that is faster). The last is what no rewriting of a layer that
    stays at or below the yardstick's rate can beat.
    """
    total = sum(seconds for seconds, _ in groups.values())
    layers = at_rate = 0.0
    for (group, pass_name), (seconds, calls) in groups.items():
        if group in layer_flops and pass_name:
            layers += seconds
            work = calls * batch_size * layer_flops[group]
            at_rate += min(seconds, work / (matmul_rate_gflops * 1e9))
    return total, layers, at_rate


def print_goal(goal, reference, reference_seconds, step_seconds, bound):
    """How one op-at-a-time iteration (`bound`, from goal_bound) stands
    against a step `goal` times faster than `reference`'s.

    The goal is a ratio of the timed steps (`step_seconds`, ours, timed
    interleaved with `reference_seconds`), so the op time it allows is the
    traced op time over the speedup the goal needs: the trace runs later,
    when the machine may be faster or slower than while timing.
    """
    total, layers, at_rate = bound
    speedup = step_seconds * goal / reference_seconds
    allowed = total / speedup
    change = (f"{speedup:.2f}x faster" if speedup > 1
              else f"already {1 / speedup:.2f}x faster than that")
    print(f"\nthe goal, {goal:.2f}x the {reference}'s steps: {reference_seconds / goal:.3f} s "
          f"an iteration against {step_seconds:.3f} ({reference}: {reference_seconds:.3f}), "
          f"{change}; one op at a time, {allowed * 1e3:.1f} of the {total * 1e3:.1f} ms")
    print(f"  the layers {layers * 1e3:.1f} ms, everything else {(total - layers) * 1e3:.1f} ms")
    print(f"  every layer pass at the matrix-multiply rate (or its own time where "
          f"faster): the layers {at_rate * 1e3:.1f} ms, op time "
          f"{(total - layers + at_rate) * 1e3:.1f} ms")
    if layers > allowed:
        verdict = "the layers alone take longer than the goal allows, everything else free"
    elif total - layers + at_rate > allowed:
        verdict = ("the goal is out of reach even with every layer pass at the "
                   "matrix-multiply rate")
    elif total > allowed:
        verdict = (f"the goal needs {(total - allowed) * 1e3:.1f} ms less op time, "
                   f"{(total - allowed) / (layers - at_rate):.0%} of what the layers "
                   f"lose below the matrix-multiply rate")
    else:
        verdict = "the step is already as fast as the goal asks"
    print(f"  -> {verdict}")


def onednn_primitives(command, marker):
    """oneDNN's own time per primitive kind, from ONEDNN_VERBOSE=1 output.

    Runs `command` (a list) in a child process with oneDNN's log on; only
    the lines after the child prints `marker` on stdout count. Returns
    {kind: milliseconds in all}, where kind is e.g. "convolution
    backward_weights" or "reorder".
    """
    import os
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    output = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=True).stdout
    counting, totals = False, collections.Counter()
    for line in output.splitlines():
        if line.strip() == marker:
            counting = True
        elif counting and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            kind = fields[5] if fields[5] != "convolution" else f"convolution {fields[7]}"
            totals[kind] += float(fields[-1])
    return dict(totals)


if __name__ == "__main__":
    sys.exit("run bench/train_speed.py --profile")
