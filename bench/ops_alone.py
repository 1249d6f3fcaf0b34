"""Single operations timed alone, each as this repo writes it against a way
of writing it that lost ("What was measured on the way" in bench/README.md).

    python bench/ops_alone.py
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/ops_alone.py
    python bench/ops_alone.py --only batch_norm
    python bench/ops_alone.py --only weight_gradient --precision bf16

  data_format      one stride-2 convolution of D, forward and both
                   gradients: NHWC (as trained) against NCHW;
  batch_norm       the recipe's seven batch-norm layers, forward and both
                   gradients: the fused kernel over whole images (as
                   trained with AVX-512 or in bf16), over the batch
                   regrouped into rows of a few pixels (as float32 trains
                   where oneDNN has no AVX-512), and tf.nn.moments with
                   tf.nn.batch_normalization;
  weight_gradient  a kernel-4 convolution's weight gradient: oneDNN's (as
                   the wide layers train, the 4x4 ones aside) against
                   one matrix multiply of the padded input's space_to_depth
                   and four shifted copies of the output gradient, that
                   matrix multiply alone, the patches' matrix multiply (as
                   the full-width 4x4 layers train) and the same with the
                   patches built channels-first, so that the matrix
                   multiply needs no transposed operand, and one
                   stride-1 convolution over the batch with the output
                   gradient as a dilated filter (as the half-width 4x4
                   layers train where oneDNN has no AVX-512);
  first_layer      D's first convolution (3 channels, kernel 4), forward
                   and weight gradient: as trained against a stride-1 2x2
                   convolution over the padded image's space_to_depth (12
                   channels), and that space_to_depth alone, written as a
                   reshape and a transpose or as tf.nn.space_to_depth;
  patches          the patch matrix multiplies' patches and their
                   overlap-add (D's last convolution and G's first
                   transposed one): gathers of whole pixels (as trained)
                   against tf.image.extract_patches and shifted planes of
                   taps, and slices of the padded input's space_to_depth
                   for even kernels (as trained before the gathers); the
                   overlap-add's gathers also against the same gathers
                   from values with a zero tap appended to each image's
                   (as trained before the matrix multiply made a zero
                   row);
  depth_to_space   the sub-pixel layers' depth_to_space (12 channels to 3,
                   and one with many channels): a reshape and a transpose
                   (as trained) against tf.nn.depth_to_space.

Each pair shares a process and is timed in rounds taken in turn forwards
and backwards; figures are medians in ms. With TF_ENABLE_ONEDNN_OPTS=0 the
same pairs run on TensorFlow's own kernels.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_speed  # noqa: E402  (puts the project on the path, sets oneDNN's default)
import gan_model  # noqa: E402
import hardware  # noqa: E402
import layers  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1

# (name, input side, input channels, output channels, kernel) of D's wide
# convolutions: the default model's (k5) and the recipe's (half width, k4).
CONVOLUTIONS = [("D conv1, full width, k5", 32, 64, 128, 5),
                ("D conv2, full width, k5", 16, 128, 256, 5),
                ("D conv1, half width, k4", 32, 32, 64, 4),
                ("D conv2, half width, k4", 16, 64, 128, 4)]
# [H, W, C] of the recipe's batch-norm inputs: G's four, then D's three.
BATCH_NORM_SHAPES = [(4, 4, 256), (8, 8, 128), (16, 16, 64), (32, 32, 32),
                     (16, 16, 64), (8, 8, 128), (4, 4, 256)]
# (name, input side, input channels, output channels) of the recipe's D
# convolutions with kernel 4, and two at full width: the last one is a 4x4
# layer that trains as the patches' matrix multiply (layers.py).
WEIGHT_GRADIENTS = [("D conv1, half width", 32, 32, 64), ("D conv2, half width", 16, 64, 128),
                    ("D conv3, half width", 8, 128, 256), ("D conv1, full width, k4", 32, 64, 128),
                    ("D conv2, full width, k4", 16, 128, 256),
                    ("D conv3, full width, k4", 8, 256, 512)]
# (name, input side, input channels, kernel) of the layers that train as
# patch matrix multiplies: D's last convolution (and, the other way round, G's
# first transposed one) at full width, and in bf16 at half width.
PATCH_LAYERS = [("D conv3, full width, k5", 8, 256, 5), ("D conv3, full width, k4", 8, 256, 4),
                ("D conv3, half width, k4", 8, 128, 4)]
# (name, [H, W, C]) of depth_to_space inputs: G's last layer at kernel 4
# and 5 (its sub-pixel convolution's 12 channels), and many channels (as
# the full-width overlap-add of space_to_depth blocks had them).
DEPTH_TO_SPACE_SHAPES = [("G's last layer, k4", [33, 33, 12]), ("G's last layer, k5", [32, 32, 12]),
                         ("many channels", [5, 5, 1024])]
WEIGHT_GRADIENT_WAYS = ("oneDNN", "shifted matmul", "matmul alone", "patch matmul",
                        "channels-first patches", "dilated convolution")


def random(shape):
    return tf.constant(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))


def scalar(*tensors):
    """One number that depends on every tensor, to fetch instead of them."""
    return tf.add_n([tf.reduce_sum(tf.reshape(t, [-1])[:1]) for t in tensors])


def convolution_with_gradients(data_format, batch, side, c_in, c_out, kernel):
    nhwc = data_format == "NHWC"
    x = tf1.Variable(random([batch, side, side, c_in] if nhwc else [batch, c_in, side, side]))
    w = tf1.Variable(0.02 * random([kernel, kernel, c_in, c_out]))
    y = tf.nn.conv2d(x, w, [1, 2, 2, 1] if nhwc else [1, 1, 2, 2], "SAME",
                     data_format=data_format)
    dx, dw = tf.gradients(y, [x, w], grad_ys=random(y.shape.as_list()))
    return scalar(y, dx, dw)


def batch_norms_with_gradients(way, batch):
    """way: "whole images" or "rows" (the fused kernel over the batch as it
    is, or regrouped into rows of layers.BATCH_NORM_ROW_PIXELS pixels),
    or "moments"."""
    outputs = []
    for shape in BATCH_NORM_SHAPES:
        x = tf1.Variable(random([batch, *shape]))
        gamma, beta = tf1.Variable(tf.ones([shape[-1]])), tf1.Variable(tf.zeros([shape[-1]]))
        if way == "moments":
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-5)
        else:
            rows = (tf.reshape(x, [-1, layers.BATCH_NORM_ROW_PIXELS, 1, shape[-1]])
                    if way == "rows" else x)
            y, _, _ = tf1.nn.fused_batch_norm(rows, gamma, beta, epsilon=1e-5, is_training=True)
            y = tf.reshape(y, x.shape)
        outputs += [y, *tf.gradients(y, [x, gamma, beta], grad_ys=random(y.shape.as_list()))]
    return scalar(*outputs)


def padded_blocks(x):
    """The space_to_depth (2x2 blocks) of x padded by one pixel on each side,
    as a kernel-4, stride-2, SAME convolution pads it. Written as a reshape
    and a transpose, the same values as tf.nn.space_to_depth, whose kernel
    is several times slower at 3 channels (--only first_layer)."""
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    _, height, width, channels = x.shape
    x = tf.reshape(x, [-1, height // 2, 2, width // 2, 2, channels])
    return tf.reshape(tf.transpose(x, [0, 1, 3, 2, 4, 5]),
                      [-1, height // 2, width // 2, 4 * channels])


def block_rows(w):
    """Weights [4, 4, C, F] -> [16C, F], tap (2a + p, 2b + q) at row
    ((a * 2 + b) * 4 + p * 2 + q) * C + c: one row per column of
    block_patches."""
    _, _, channels, filters = w.shape
    w = tf.reshape(w, [2, 2, 2, 2, channels, filters])
    return tf.reshape(tf.transpose(w, [0, 2, 1, 3, 4, 5]), [-1, filters])


def weights_from_block_rows(rows, shape):
    """The inverse of block_rows: [16C, F] -> `shape` [4, 4, C, F]."""
    _, _, channels, filters = shape
    rows = tf.reshape(rows, [2, 2, 2, 2, channels, filters])
    return tf.reshape(tf.transpose(rows, [0, 2, 1, 3, 4, 5]), shape)


def block_patches(x):
    """The patches of a kernel-4, stride-2, SAME convolution as slices of the
    padded input's space_to_depth, concatenated (as the 4x4 layers took them
    before layers._patches gathered pixels): [N * H/2 * W/2, 16C], taps in
    the order of block_rows."""
    blocks = padded_blocks(x)
    out_h, out_w = x.shape[1] // 2, x.shape[2] // 2
    windows = tf.concat([blocks[:, a:a + out_h, b:b + out_w, :] for a in (0, 1) for b in (0, 1)],
                        -1)
    return tf.reshape(windows, [-1, windows.shape[-1]])


def block_overlap_add(patches):
    """The adjoint of block_patches, patches [N, h, w, 16C] -> [N, 2h, 2w, C]:
    the four blocks of each window added in as shifted planes of the
    space_to_depth, which depth_to_space undoes."""
    depth = patches.shape[-1] // 4
    planes = [tf.pad(patches[:, :, :, (a * 2 + b) * depth:(a * 2 + b + 1) * depth],
                     [[0, 0], [a, 1 - a], [b, 1 - b], [0, 0]]) for a in (0, 1) for b in (0, 1)]
    image = tf.nn.depth_to_space(tf.add_n(planes), 2)
    return image[:, 1:1 + 2 * patches.shape[1], 1:1 + 2 * patches.shape[2], :]


def plane_overlap_add(patches, kernel_size):
    """layers._overlap_add as it was for odd kernels: [N, h, w, k*k*C],
    taps in the weights' order -> [N, 2h, 2w, C]. Tap t of window o covers
    pixel 2o + t - pad along each axis, so each phase (even or odd pixels)
    sums whole shifted planes of taps, and depth_to_space interleaves the
    four phases."""
    height, width = patches.shape[1], patches.shape[2]
    channels = patches.shape[-1] // kernel_size ** 2
    patches = tf.reshape(patches, [-1, height, width, kernel_size, kernel_size, channels])
    pad = (kernel_size - 2) // 2

    def shifted(plane, down, right):
        plane = plane[:, max(-down, 0):height - max(down, 0),
                      max(-right, 0):width - max(right, 0), :]
        return tf.pad(plane, [[0, 0], [max(down, 0), max(-down, 0)],
                              [max(right, 0), max(-right, 0)], [0, 0]])
    phases = [tf.add_n([shifted(patches[:, :, :, tap_h, tap_w, :], (tap_h - pad - phase_h) // 2,
                                (tap_w - pad - phase_w) // 2)
                        for tap_h in range(kernel_size) if (tap_h - pad) % 2 == phase_h
                        for tap_w in range(kernel_size) if (tap_w - pad) % 2 == phase_w])
              for phase_h in (0, 1) for phase_w in (0, 1)]
    return tf.nn.depth_to_space(tf.concat(phases, -1), 2)


def padded_overlap_add(patches, kernel_size):
    """layers._overlap_add as it was before its zero row came from the
    matrix multiply: [N, h, w, k*k*C] -> [N, 2h, 2w, C], the same slot
    gathers and add_n, from the values with a zero tap appended to each
    image's (a copy of all of them)."""
    height, width = 2 * patches.shape[1], 2 * patches.shape[2]
    channels = patches.shape[-1] // kernel_size ** 2
    covering = layers._covering_taps(height, width, kernel_size)
    image_taps = patches.shape[1] * patches.shape[2] * kernel_size ** 2
    taps = tf.pad(tf.reshape(patches, [-1, image_taps, channels]), [[0, 0], [0, 1], [0, 0]])
    image = tf.add_n([tf.gather(taps, covering[:, slot], axis=1)
                      for slot in range(covering.shape[1])])
    return tf.reshape(image, [-1, height, width, channels])


def shifted_matmul_weight_gradient(x, dy):
    """The weight gradient [4, 4, C, Co] of a kernel-4, stride-2, SAME
    convolution of x [N, H, W, C] whose output gradient is dy [N, H/2, W/2, Co].

    Tap (2a + p, 2b + q) reads block (i + a, j + b), phase (p, q), of the
    padded input's space_to_depth S, so dW[a, p, b, q] = sum over (i, j) of
    S[i + a, j + b, (p, q)] dy[i, j]: one matrix multiply of S against dy
    shifted by (a, b) within S's (H/2 + 1) x (W/2 + 1) grid, for all four
    (a, b) side by side.
    """
    c_in, c_out = x.shape[-1], dy.shape[-1]
    blocks = padded_blocks(x)
    shifted = tf.concat([tf.pad(dy, [[0, 0], [a, 1 - a], [b, 1 - b], [0, 0]])
                         for a in (0, 1) for b in (0, 1)], -1)
    products = tf.matmul(tf.reshape(blocks, [-1, 4 * c_in]),
                         tf.reshape(shifted, [-1, 4 * c_out]), transpose_a=True)
    products = tf.reshape(products, [2, 2, c_in, 2, 2, c_out])  # p, q, c, a, b, co
    return tf.reshape(tf.transpose(products, [3, 0, 4, 1, 2, 5]), [4, 4, c_in, c_out])


def channels_first_patch_weight_gradient(x, dy):
    """The same weight gradient as patches^T x dy, with the patches built as
    columns [k*k*C, N*h*w] from a channels-first copy of the padded input's
    space_to_depth: the matrix multiply then takes both operands as they
    are. (A transpose of row patches would not do: grappler folds it into
    the matrix multiply as a transposed operand.)"""
    c_in, c_out = x.shape[-1], dy.shape[-1]
    out_h, out_w = dy.shape[1], dy.shape[2]
    blocks = padded_blocks(x)
    blocks = tf.transpose(blocks, [3, 0, 1, 2])  # [4C, N, h + 1, w + 1]
    columns = tf.concat([blocks[:, :, a:a + out_h, b:b + out_w] for a in (0, 1) for b in (0, 1)],
                        0)
    rows = tf.matmul(tf.reshape(columns, [16 * c_in, -1]), tf.reshape(dy, [-1, c_out]))
    return weights_from_block_rows(rows, [4, 4, c_in, c_out])


def weight_gradient(way, batch, side, c_in, c_out, dtype=tf.float32):
    """The fetch of one way of the weight gradient, computed in `dtype` from
    float32 variables (a cast, as the bf16 layers read them)."""
    if way == "matmul alone":  # the shifted way's matrix multiply, its operands ready
        rows = batch * (side // 2 + 1) ** 2
        blocks = tf.cast(tf1.Variable(random([rows, 4 * c_in])), dtype)
        shifted = tf.cast(tf1.Variable(random([rows, 4 * c_out])), dtype)
        return scalar(tf.matmul(blocks, shifted, transpose_a=True))
    x = tf.cast(tf1.Variable(random([batch, side, side, c_in])), dtype)
    dy = tf.cast(tf1.Variable(random([batch, side // 2, side // 2, c_out])), dtype)
    if way == "shifted matmul":
        return scalar(shifted_matmul_weight_gradient(x, dy))
    if way == "patch matmul":
        rows = tf.matmul(layers._patches(x, 4), tf.reshape(dy, [-1, c_out]), transpose_a=True)
        return scalar(layers._weights_from_patch_rows(rows, [4, 4, c_in, c_out]))
    if way == "channels-first patches":
        return scalar(channels_first_patch_weight_gradient(x, dy))
    if way == "dilated convolution":
        return scalar(layers._dilated_weight_gradient(x, dy, 4))
    return scalar(tf1.nn.conv2d_backprop_filter(x, [4, 4, c_in, c_out], dy, [1, 2, 2, 1],
                                                "SAME"))


def space_to_depth_weights(w):
    """[4, 4, C, F] -> [2, 2, 4C, F]: tap (2a + p, 2b + q) of w is tap (a, b)
    of a stride-1 convolution over the padded input's space_to_depth, at
    that input's channel (p, q, c): block_rows(w), in the shape of a 2x2
    kernel."""
    _, _, c_in, c_out = w.shape
    return tf.reshape(block_rows(w), [2, 2, 4 * c_in, c_out])


def weights_from_space_to_depth(w):
    """The inverse of space_to_depth_weights."""
    _, _, depth, c_out = w.shape
    return weights_from_block_rows(tf.reshape(w, [-1, c_out]), [4, 4, depth // 4, c_out])


def space_to_depth_conv2d(x, w):
    """tf.nn.conv2d(x, w, stride 2, SAME) for a kernel-4 w, as a stride-1
    2x2 convolution over the padded input's space_to_depth, and its weight
    gradient for the output gradient dy: (y, a function of dy)."""
    blocks = padded_blocks(x)
    y = tf.nn.conv2d(blocks, space_to_depth_weights(w), [1, 1, 1, 1], "VALID")

    def weight_gradient(dy):
        return weights_from_space_to_depth(tf1.nn.conv2d_backprop_filter(
            blocks, [2, 2, blocks.shape[-1], w.shape[-1]], dy, [1, 1, 1, 1], "VALID"))
    return y, weight_gradient


def first_layer(way, batch, df_dim):
    x = tf1.Variable(random([batch, 64, 64, 3]))
    w = tf1.Variable(0.02 * random([4, 4, 3, df_dim]))
    dy = tf1.Variable(random([batch, 32, 32, df_dim]))
    if way == "space_to_depth alone":
        return scalar(padded_blocks(x))
    if way == "tf.nn.space_to_depth alone":
        return scalar(tf.nn.space_to_depth(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 2))
    if way == "space_to_depth":
        y, weight_gradient = space_to_depth_conv2d(x, w)
        return scalar(y, weight_gradient(dy))
    y = tf.nn.conv2d(x, w, [1, 2, 2, 1], "SAME")
    return scalar(y, tf1.nn.conv2d_backprop_filter(x, [4, 4, 3, df_dim], dy, [1, 2, 2, 1],
                                                   "SAME"))


def patches(way, batch, side, channels, kernel_size, dtype):
    """The patches of a stride-2, SAME convolution over [batch, side, side,
    channels], one way."""
    x = tf.cast(tf1.Variable(random([batch, side, side, channels])), dtype)
    if way == "gather":
        return scalar(layers._patches(x, kernel_size))
    if way == "space_to_depth blocks":
        return scalar(block_patches(x))
    return scalar(tf.image.extract_patches(x, [1, kernel_size, kernel_size, 1], [1, 2, 2, 1],
                                           [1, 1, 1, 1], "SAME"))


def overlap_add(way, batch, side, channels, kernel_size, dtype):
    """The window taps of a [batch, side, side, channels] image added back
    into it, one way."""
    windows, taps = batch * (side // 2) ** 2, kernel_size ** 2 * channels
    if way == "gathers":  # as trained: a zero row after the windows' rows
        values = tf1.Variable(tf.concat([random([windows, taps]), tf.zeros([1, taps])], 0))
        return scalar(layers._overlap_add(tf.cast(values, dtype), side // 2, side // 2,
                                             kernel_size))
    values = tf.cast(tf1.Variable(random([batch, side // 2, side // 2, taps])), dtype)
    if way == "gathers, zero taps padded":
        return scalar(padded_overlap_add(values, kernel_size))
    if way == "space_to_depth blocks":
        return scalar(block_overlap_add(values))
    return scalar(plane_overlap_add(values, kernel_size))


def depth_to_space(way, shape):
    y = tf1.Variable(random(shape))
    if way == "reshape and transpose":
        return scalar(layers._few_channel_depth_to_space(y))
    return scalar(tf.nn.depth_to_space(y, 2))


def pairs(args):
    """(title, {way: function building the fetch in the default graph})."""
    batch = args.batch_size
    if "data_format" in args.only:
        for name, *shape in CONVOLUTIONS:
            yield name + ", forward and both gradients", {
                way: lambda way=way, shape=shape: convolution_with_gradients(way, batch, *shape)
                for way in ("NHWC", "NCHW")}
    if "batch_norm" in args.only:
        yield "the recipe's 7 batch norms, forward and both gradients", {
            "fused, whole images": lambda: batch_norms_with_gradients("whole images", batch),
            f"fused, rows of {layers.BATCH_NORM_ROW_PIXELS} pixels":
                lambda: batch_norms_with_gradients("rows", batch),
            "moments": lambda: batch_norms_with_gradients("moments", batch)}
    if "weight_gradient" in args.only:
        for name, *shape in WEIGHT_GRADIENTS:
            yield f"{name}, weight gradient, {args.precision}", {
                way: lambda way=way, shape=shape: weight_gradient(
                    way, batch, *shape, gan_model.PRECISIONS[args.precision])
                for way in WEIGHT_GRADIENT_WAYS}
    if "first_layer" in args.only:
        for name, df_dim in (("half width", 32), ("full width", 64)):
            yield f"D conv0, {name}, k4, forward and weight gradient", {
                way: lambda way=way, df_dim=df_dim: first_layer(way, batch, df_dim)
                for way in ("as trained", "space_to_depth", "space_to_depth alone",
                            "tf.nn.space_to_depth alone")}
    if "patches" in args.only:
        dtype = gan_model.PRECISIONS[args.precision]
        for name, *shape in PATCH_LAYERS:
            even = shape[-1] % 2 == 0
            yield f"{name}, its patches, {args.precision}", {
                way: lambda way=way, shape=shape: patches(way, batch, *shape, dtype)
                for way in ("gather", "extract_patches", *["space_to_depth blocks"] * even)}
            yield f"{name}, their overlap-add, {args.precision}", {
                way: lambda way=way, shape=shape: overlap_add(way, batch, *shape, dtype)
                for way in ("gathers", "gathers, zero taps padded", "shifted planes",
                            *["space_to_depth blocks"] * even)}
    if "depth_to_space" in args.only:
        for name, shape in DEPTH_TO_SPACE_SHAPES:
            yield f"depth_to_space of {name} {shape}", {
                way: lambda way=way, shape=shape: depth_to_space(way, [batch, *shape])
                for way in ("reshape and transpose", "tf.nn.depth_to_space")}


def time_pair(builders, args):
    """Median ms of each way, rounds taken in turn forwards and backwards."""
    runs = {}
    for way, build in builders.items():
        graph = tf.Graph()
        with graph.as_default():
            fetch = build()
            session = tf1.Session(graph=graph)
            session.run(tf1.global_variables_initializer())
        for _ in range(args.warmup):
            session.run(fetch)
        runs[way] = (session, fetch)
    times = {way: [] for way in runs}
    for round_index in range(args.rounds):
        for way in train_speed.alternating(runs, round_index):
            session, fetch = runs[way]
            started = time.perf_counter()
            for _ in range(args.iters):
                session.run(fetch)
            times[way].append((time.perf_counter() - started) / args.iters)
    for session, _ in runs.values():
        session.close()
    return {way: 1e3 * statistics.median(seconds) for way, seconds in times.items()}


KINDS = ("data_format", "batch_norm", "weight_gradient", "first_layer", "patches",
         "depth_to_space")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--only", default=",".join(KINDS),
                        help="comma-separated, from " + ", ".join(KINDS))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=sorted(gan_model.PRECISIONS),
                        help="the weight_gradient and patches kinds' compute type")
    parser.add_argument("--rounds", type=int, default=10, help="rounds (median)")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    args = parser.parse_args(argv)
    args.only = args.only.split(",")
    unknown = set(args.only) - set(KINDS)
    if unknown:
        parser.error(f"--only: {', '.join(sorted(unknown))} not among {', '.join(KINDS)}")
    print(hardware.describe())
    print(f"batch {args.batch_size}; median of {args.rounds} rounds x {args.iters} runs, "
          f"taken in turn\n")
    for title, builders in pairs(args):
        ms = time_pair(builders, args)
        first = next(iter(ms.values()))
        print(f"{title}: " + ", ".join(f"{way} {value:.2f} ms ({value / first:.2f}x)"
                                       for way, value in ms.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
