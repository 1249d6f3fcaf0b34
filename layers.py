"""The DCGAN's layers from raw `tf.nn` ops: linear, the stride-2 convolution
and transposed convolution, batch norm and leaky ReLU.

Each layer creates its variables with get_variable under the caller's
variable scope, so calling a network a second time (AUTO_REUSE) shares
them, and computes in the dtype of its input (float32, or bfloat16 for
mixed precision) while its variables stay float32. A layer followed by
batch norm takes `bias=False`: batch norm's offset does a bias's job.

Each computes the sums that TensorFlow's own op would, in the form that ran
fastest on the CPUs measured: a few layers are matrix multiplies over image
patches, sub-pixel convolutions or dilated weight gradients, chosen by the
*_PIXELS, *_CHANNELS and *_WEIGHTS constants below and by what hardware.py
reports of the machine that builds the graph. The forms only reorder the
same sums, so results move within rounding (tests/test_layers.py); the
figures behind each choice are in bench/README.md.
"""

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


STRIDES = [1, 2, 2, 1]
# Convolutions whose small side (the output of a convolution, the input of a
# transposed one) has at most this many pixels are written as one matrix
# multiply over the image patches, in both directions: at 4x4 (D's last
# convolution, G's first transposed one) oneDNN's direct convolution ran at
# about half the rate of a matrix multiply on the machines where this was
# chosen, and reorders the weights (13 MB at full width) on every call. On a
# Zen 4 its kernels ran near the full rate there, yet the step was level
# (1.00-1.03x); on Zen 3 the patches won by 9.5%, and on an Intel Xeon with
# AMX by 8.6%: bench/README.md.
# The same sums, in another order: results move within rounding.
PATCH_MATMUL_MAX_PIXELS = 16
# Of those, a float32 transposed convolution with at least this many weights
# runs forward as a matrix multiply to the patch values and their
# overlap-add as well; smaller ones, and bf16, keep oneDNN's forward.
# Measured alone, G's first layer at batch 64, fp32: full width (5x5, 13
# MB of weights) 20.5 against 25.2 ms, and 14.8 against 16.4 at 4x4 (8 MB);
# half width (2-3 MB) loses, 4.8 against 4.2 ms at 4x4 and 7.1 against 6.3
# at 5x5. In bf16 oneDNN's is level at full width and 5x5 (11.9 ms each)
# and faster at 4x4 (7.3 against 8.6).
PATCH_FORWARD_MIN_WEIGHTS = 2 ** 20
# Float32 layers of that size with fewer weights than this (the recipe's
# half width) keep oneDNN's kernels: on an AVX2-only CPU (AMD EPYC, Zen 3)
# the patch matrix multiplies there made the recipe's step 1.108x slower,
# while at full width they won (the step 0.913x without them); with AVX-512
# oneDNN's kernels at half width were level (0.995x and 1.029x on two AMD
# EPYCs). bf16, not measured without the patches there, keeps them.
PATCH_MATMUL_MIN_FP32_WEIGHTS = 2 ** 20
# Transposed convolutions to at most this many channels (G's last layer, and
# the input gradient of D's first convolution: both write the 3-channel
# image) run as a sub-pixel convolution, a stride-1 convolution to four
# times the channels: oneDNN's direct kernels use a matrix multiply's width
# poorly at 3 output channels (8-16% of its rate, bench/train_speed.py
# --profile), and about twice as fast as 12. Wider layers lose: the
# depth-to-space copy then costs more than it saves.
SUBPIXEL_MAX_CHANNELS = 4
# Where oneDNN runs without AVX-512 (hardware.onednn_without_avx512: an
# AVX2-only CPU), the layers left to its kernels whose small side has at
# most this many pixels (the recipe's D conv3 and G deconv1, 8x8 <-> 4x4 at
# half width) take their weight gradient as one stride-1 convolution over
# the batch (_dilated_weight_gradient). oneDNN's AVX2 weight-gradient
# kernel ran those at about two thirds of the matrix-multiply rate; its
# forward convolution runs near the full rate. Measured with oneDNN held to
# AVX2 on a Zen 4: D conv3 alone 6.6 against 7.9 ms at half width (0.84x
# at full width, k5), the recipe's step 1.015x and 1.023x. At 8x8 and more
# pixels it lost (1.17-1.22x alone), and with AVX-512 everywhere (1.18x
# alone, the step 0.981x). Held to AVX2 on an Intel Xeon, oneDNN's kernel
# was level (the step 1.018x with it).
DILATED_WEIGHT_GRADIENT_MAX_PIXELS = 16
# In bf16 on oneDNN's CPU kernels (hardware.onednn_cpu_kernels), the layers
# whose small side has at most this many pixels and that are not patch
# matrix multiplies (the 8x8 <-> 16x16 ones: D conv2, G deconv2) do the
# same: oneDNN's bf16 weight gradient ran those at about 60% of the bf16
# matrix-multiply rate. Measured alone on a Zen 4 (avx512_bf16, no AMX):
# D conv2 3.6 against 5.2 ms at half width, 18.9 against 26.7 at full width
# (k5). At 16x16 and more pixels it lost (1.03-1.15x alone).
DILATED_BF16_WEIGHT_GRADIENT_MAX_PIXELS = 64


# Where oneDNN runs without AVX-512 (hardware.onednn_without_avx512), float32
# batch norm in training regroups each image's pixels into rows of this many
# (0: off): oneDNN's AVX2 kernel for NHWC ran its forward pass 2.6-2.9 times
# faster over rows of 4 pixels than over whole 4x4 to 32x32 images, and its
# backward pass 5-10% faster.
BATCH_NORM_ROW_PIXELS = 4


def linear(x, units, stddev, name, bias=True):
    """Dense layer: x [N, in] -> [N, units]."""
    with tf1.variable_scope(name):
        w = _weights("w", [x.shape[-1], units], stddev, False, x.dtype)
        y = tf.matmul(x, w)
        return _add_bias(y, units) if bias else y


def conv2d(x, filters, stddev, name, bias=True, kernel_size=5):
    """kxk convolution with stride 2: [N, H, W, C] -> [N, H/2, W/2, filters].

    SAME padding: for k = 4 that is one pixel on each side, as in the
    PyTorch DCGAN's Conv2d(k=4, stride=2, padding=1).
    """
    with tf1.variable_scope(name):
        w = _weights("w", [kernel_size, kernel_size, x.shape[-1], filters], stddev, True,
                     x.dtype)
        if _runs_as_patch_matmul((x.shape[1] // 2) * (x.shape[2] // 2), w):
            y = _patch_matmul_conv2d(x, w)
        elif x.shape[-1] <= SUBPIXEL_MAX_CHANNELS:
            y = _conv2d_with_subpixel_input_gradient(x, w)
        elif _dilated_weight_gradient_pays((x.shape[1] // 2) * (x.shape[2] // 2), x.dtype):
            y = _conv2d_with_dilated_weight_gradient(x, w)
        else:
            y = tf.nn.conv2d(x, w, strides=STRIDES, padding="SAME")
        return _add_bias(y, filters) if bias else y


def deconv2d(x, filters, stddev, name, bias=True, kernel_size=5):
    """kxk transposed convolution, stride 2: [N, H, W, C] -> [N, 2H, 2W, filters].

    The output shape takes the batch size from the tensor at run time, so
    the same graph serves any batch size.
    """
    with tf1.variable_scope(name):
        w = _weights("w", [kernel_size, kernel_size, filters, x.shape[-1]], stddev, True,
                     x.dtype)
        if _runs_as_patch_matmul(x.shape[1] * x.shape[2], w):
            y = _patch_matmul_conv2d_transpose(
                x, w, matmul_forward=(x.dtype == tf.float32 and
                                      w.shape.num_elements() >= PATCH_FORWARD_MIN_WEIGHTS))
        elif filters <= SUBPIXEL_MAX_CHANNELS:
            # Its bias goes inside, into the sub-pixel convolution.
            return _subpixel_conv2d_transpose_with_native_gradients(
                x, w, *([_bias(filters, x.dtype)] if bias else []))
        elif _dilated_weight_gradient_pays(x.shape[1] * x.shape[2], x.dtype):
            y = _conv2d_transpose_with_dilated_weight_gradient(x, w)
        else:
            y = _conv2d_transpose(x, w)
        # No fusion takes a transposed convolution's bias.
        return _add_bias(y, filters, fusable=False) if bias else y


def batch_norm(x, name, is_training, epsilon, momentum, updates=None, activation=None):
    """Batch normalisation of an NHWC tensor from raw ops, then `activation`.

    Training normalises with the batch's statistics and, when `updates` is a
    list, appends the ops that move the moving averages towards them; the
    caller runs those with its own network's train op. Inference normalises
    with the moving averages. The activation (e.g. tf.nn.relu) is applied
    here so that it follows the batch-norm op directly, where grappler
    fuses a ReLU into it.

    Variables: gamma, beta (trainable); moving_mean, moving_variance (not).
    """
    channels = x.shape[-1]
    with tf1.variable_scope(name):
        gamma = tf1.get_variable("gamma", [channels], tf.float32, tf1.ones_initializer())
        beta = tf1.get_variable("beta", [channels], tf.float32, tf1.zeros_initializer())
        # With several replicas each moves the averages towards its own
        # batch; MEAN makes every copy take the replicas' mean instead of
        # drifting apart.
        moving_mean = tf1.get_variable("moving_mean", [channels], tf.float32,
                                       tf1.zeros_initializer(), trainable=False,
                                       aggregation=tf.VariableAggregation.MEAN)
        moving_variance = tf1.get_variable("moving_variance", [channels], tf.float32,
                                           tf1.ones_initializer(), trainable=False,
                                           aggregation=tf.VariableAggregation.MEAN)
        if not is_training:
            y, _, _ = tf1.nn.fused_batch_norm(x, gamma, beta, moving_mean, moving_variance,
                                              epsilon=epsilon, is_training=False)
            return activation(y) if activation else y
        # Over rows of a few pixels where that pays (BATCH_NORM_ROW_PIXELS);
        # the statistics are of every pixel of the batch either way.
        row_pixels = _batch_norm_row_pixels(x)
        rows = tf.reshape(x, [-1, row_pixels, 1, channels]) if row_pixels else x
        # The fused kernel returns the batch mean and the unbiased batch
        # variance, which is what the moving average should track.
        y, mean, variance = tf1.nn.fused_batch_norm(rows, gamma, beta, epsilon=epsilon,
                                                    is_training=True)
        y = activation(y) if activation else y
        if updates is not None:
            updates.append(moving_mean.assign(momentum * moving_mean + (1 - momentum) * mean))
            updates.append(moving_variance.assign(
                momentum * moving_variance + (1 - momentum) * variance))
        return tf.reshape(y, [-1, *x.shape[1:]]) if row_pixels else y


def leaky_relu(x, slope):
    """max(x, slope * x), with its gradient computed from the output.

    For slope >= 0 the output is positive exactly where the input is, so the
    gradient needs only the output. TensorFlow's own gradient reads the
    input instead, and then grappler's remapper, fusing conv + bias + leaky
    ReLU, breaks that reference, fails, and drops every fusion of the
    training graph. Measured with bench/train_speed.py: 3% faster in fp32
    and 4% in bf16.
    """
    @tf.custom_gradient
    def activation(features):
        y = tf.nn.leaky_relu(features, slope)

        def gradient(dy):
            return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=slope)
        return y, gradient
    return activation(x)


# The layers' variables and biases.

def _weights(name, shape, stddev, truncated, dtype):
    """A float32 weight variable, read as `dtype` (the layer's compute type)."""
    init = (tf1.truncated_normal_initializer(stddev=stddev) if truncated
            else tf1.random_normal_initializer(stddev=stddev))
    return tf.cast(tf1.get_variable(name, shape, tf.float32, init), dtype)


def _bias(units, dtype):
    """The layer's bias variable "b", read as `dtype`."""
    return tf.cast(tf1.get_variable("b", [units], tf.float32, tf1.zeros_initializer()), dtype)


def _add_bias(y, units, fusable=True):
    """y + b. BiasAdd where grappler can fuse it into the convolution before it;
    elsewhere a broadcast add, whose gradient (a plain sum) is faster than
    BiasAddGrad on a 3-channel image: 1.2 ms against 2.8 for G's last layer
    and its gradient at batch 64, measured. In bf16 the BiasAdd takes its
    gradient from _bias_gradient (_bias_add_summed_in_float32)."""
    b = _bias(units, y.dtype)
    if not fusable:
        return y + b
    return tf.nn.bias_add(y, b) if y.dtype == tf.float32 else _bias_add_summed_in_float32(y, b)


def _bias_add_summed_in_float32(y, b):
    """tf.nn.bias_add(y, b) whose bias gradient is _bias_gradient's sums. On
    the CPU BiasAddGrad adds bf16 values up in bf16, and a long sum stalls:
    D's first bias gradient at batch 64 came out about 1,900 where the
    float32 sum was 66,100 (tests/test_layers.py). The reductions add
    up in float32, within one bf16 rounding, and took 0.5-0.6 against 0.8
    ms there."""
    @tf.custom_gradient
    def add(y, b):
        def gradient(dy):
            return dy, _bias_gradient(dy)
        return tf.nn.bias_add(y, b), gradient
    return add(y, b)


# bf16 bias gradients over at least this many channels (D's first layer)
# sum their rows of pixels as a matrix multiply by ones, which oneDNN adds
# up in float32 as the reductions do: at batch 64 on an Intel Xeon with
# AMX, 0.82 against 2.08 ms at 64 channels, 0.57 against 1.08 at 32; at 3
# channels (G's last layer) 0.41 against 0.33.
BF16_BIAS_MATMUL_MIN_CHANNELS = 16


def _bias_gradient(dy):
    """dy summed over every axis but its last (channels), in two reductions:
    over whole rows of pixels first, then over a row's pixels. One reduction
    to a few channels vectorizes poorly: G's last bias gradient at batch 64
    took 0.35 against 0.83 ms in float32 and 0.51 against 1.04 in bf16.
    TensorFlow's reductions add bf16 values up in float32. The first sum
    is a matrix multiply where BF16_BIAS_MATMUL_MIN_CHANNELS says."""
    channels = dy.shape[-1]
    row = channels * (dy.shape[-2] if dy.shape.rank > 2 else 1)
    with tf.name_scope("bias_gradient"):  # one name, for a step profile
        rows = tf.reshape(dy, [-1, row])
        if dy.dtype == tf.bfloat16 and channels >= BF16_BIAS_MATMUL_MIN_CHANNELS:
            sums = tf.matmul(tf.ones([1, tf.shape(rows)[0]], dy.dtype), rows)[0]
        else:
            sums = tf.reduce_sum(rows, 0)
        return tf.reduce_sum(tf.reshape(sums, [-1, channels]), 0)


# Which form a convolution takes, and the forms.

def _runs_as_patch_matmul(small_side_pixels, w):
    """True for the convolutions that PATCH_MATMUL_MAX_PIXELS and
    PATCH_MATMUL_MIN_FP32_WEIGHTS give to the patch matrix multiplies."""
    return (small_side_pixels <= PATCH_MATMUL_MAX_PIXELS and
            (w.dtype != tf.float32 or
             w.shape.num_elements() >= PATCH_MATMUL_MIN_FP32_WEIGHTS))


def _dilated_weight_gradient_pays(small_side_pixels, dtype):
    """True for the layers that DILATED_WEIGHT_GRADIENT_MAX_PIXELS and
    DILATED_BF16_WEIGHT_GRADIENT_MAX_PIXELS give to _dilated_weight_gradient,
    on this machine."""
    if dtype == tf.bfloat16:
        return (small_side_pixels <= DILATED_BF16_WEIGHT_GRADIENT_MAX_PIXELS
                and hardware.onednn_cpu_kernels())
    return (small_side_pixels <= DILATED_WEIGHT_GRADIENT_MAX_PIXELS
            and hardware.onednn_without_avx512())


def _batch_norm_row_pixels(x):
    """BATCH_NORM_ROW_PIXELS where it applies to x on this machine, else 0."""
    pixels = x.shape[1] * x.shape[2]
    if (BATCH_NORM_ROW_PIXELS and x.dtype == tf.float32
            and pixels > BATCH_NORM_ROW_PIXELS and pixels % BATCH_NORM_ROW_PIXELS == 0
            and hardware.onednn_without_avx512()):
        return BATCH_NORM_ROW_PIXELS
    return 0


def _window_pixels(height, width, kernel_size):
    """The pixel that each tap of each window of a stride-2, SAME convolution
    over a height x width image reads: [out_h * out_w * k * k] flat indices
    (y * width + x), ordered by window, then tap row, then tap column; taps
    in the padding read index height * width, a zero pixel past the image."""
    out_h, out_w = -(-height // 2), -(-width // 2)
    top = max(2 * (out_h - 1) + kernel_size - height, 0) // 2
    left = max(2 * (out_w - 1) + kernel_size - width, 0) // 2
    rows = 2 * np.arange(out_h)[:, None] + np.arange(kernel_size) - top   # [out_h, k]
    cols = 2 * np.arange(out_w)[:, None] + np.arange(kernel_size) - left  # [out_w, k]
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return np.where(inside, rows * width + cols, height * width).reshape(-1).astype(np.int32)


def _with_zero_pixel(x, pixels, channels):
    """x as [N, pixels, channels], with a zero pixel after the last one."""
    return tf.pad(tf.reshape(x, [-1, pixels, channels]), [[0, 0], [0, 1], [0, 0]])


def _patches(x, kernel_size):
    """[N, H, W, C] -> [N * H/2 * W/2, k*k*C]: every k x k window of a stride-2,
    SAME convolution, as rows, taps in the order of _patch_rows(w).

    One gather of whole pixels (C values each) from the image with a zero
    pixel appended for the padding: on an Intel Xeon, a fifth to a half of
    the time of tf.image.extract_patches, or of slices of the padded
    image's space_to_depth (bench/ops_alone.py --only patches).
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    taps = tf.gather(_with_zero_pixel(x, height * width, channels),
                     _window_pixels(height, width, kernel_size), axis=1, name="patches")
    return tf.reshape(taps, [-1, kernel_size * kernel_size * channels])


def _patch_rows(w):
    """Weights [k, k, C, F] -> [k*k*C, F], one row per column of _patches."""
    return tf.reshape(w, [-1, w.shape[-1]])


def _weights_from_patch_rows(rows, shape):
    """The inverse of _patch_rows: [k*k*C, F] -> `shape` [k, k, C, F]."""
    return tf.reshape(rows, shape)


def _conv2d_transpose(x, w):
    height, width, filters = 2 * x.shape[1], 2 * x.shape[2], w.shape[2]
    out_shape = tf.stack([tf.shape(x)[0], height, width, filters])
    y = tf.nn.conv2d_transpose(x, w, out_shape, strides=STRIDES, padding="SAME")
    y.set_shape([None, height, width, filters])
    return y


def _subpixel_conv2d_transpose(x, w, *bias):
    """tf.nn.conv2d_transpose(x, w, stride 2, SAME) as one stride-1 convolution
    to 4 x filters channels, one per output pixel phase, then depth_to_space;
    plus `bias` [filters] if given.

    Along each axis, output pixel 2i + s - shift (phase s = 0 or 1) of the
    transposed convolution is the sum over j < window of
    x[i - before + j] * w[k - 2 + s - 2j], where a tap outside [0, k) is
    zero: SAME pads the forward convolution by (k - 2) // 2 pixels before,
    and shift and before line every phase up on the same window.
    """
    kernel_size, _, filters, channels = w.shape
    pad = (kernel_size - 2) // 2
    shift = (pad - kernel_size) % 2
    before = (kernel_size - 2 - pad + shift) // 2
    window = (kernel_size + 1) // 2
    # taps[j][s]; index kernel_size is the zero row and column added below.
    taps = [[t if 0 <= t < kernel_size else kernel_size
             for t in (kernel_size - 2 + s - 2 * j for s in (0, 1))] for j in range(window)]
    padded = tf.pad(w, [[0, 1], [0, 1], [0, 0], [0, 0]])
    phases = tf.gather(tf.gather(padded, taps, axis=0), taps, axis=2)
    # [j_h, s_h, j_w, s_w, filters, channels] -> [j_h, j_w, channels, (s_h, s_w, filters)]
    kernel = tf.reshape(tf.transpose(phases, [0, 2, 5, 1, 3, 4]),
                        [window, window, channels, 4 * filters])
    # height + shift window positions per axis, the last one ending `after`
    # pixels past x.
    after = shift + window - 1 - before
    y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1],
                     [[0, 0], [before, after], [before, after], [0, 0]])
    if bias:
        # Each phase's channels take the bias, in a BiasAdd that grappler
        # fuses into the convolution: a broadcast add to the 3-channel
        # image took 0.9 ms more a call (G's last layer at batch 64).
        y = tf.nn.bias_add(y, tf.tile(bias[0], [4]))
    height, width = x.shape[1], x.shape[2]
    y = _few_channel_depth_to_space(y)
    return y[:, shift:shift + 2 * height, shift:shift + 2 * width, :]


def _few_channel_depth_to_space(y):
    """tf.nn.depth_to_space(y, 2) as a reshape and a transpose: the same
    values, and at the sub-pixel layers' 12 channels in less than half the
    time of TensorFlow's kernel (bench/ops_alone.py --only depth_to_space).
    At the overlap-add's thousand channels the kernel is faster, and stays."""
    _, height, width, depth = y.shape
    y = tf.reshape(y, [-1, height, width, 2, 2, depth // 4])
    return tf.reshape(tf.transpose(y, [0, 1, 3, 2, 4, 5]),
                      [-1, 2 * height, 2 * width, depth // 4])


def _subpixel_conv2d_transpose_with_native_gradients(x, w, *bias):
    """The transposed convolution (plus `bias`, if given) forward as a
    sub-pixel convolution; its gradients are TensorFlow's own (a stride-2
    convolution of dy, and the filter gradient), which run well at 3
    channels, and the bias gradient a sum."""
    @tf.custom_gradient
    def transpose(x, w, *bias):
        def gradient(dy):
            dx = tf.nn.conv2d(dy, w, STRIDES, "SAME", name="input_gradient")
            dw = tf1.nn.conv2d_backprop_filter(dy, tf.shape(w), x, STRIDES, "SAME",
                                               name="weight_gradient")
            return (dx, dw, *[_bias_gradient(dy) for _ in bias])
        return _subpixel_conv2d_transpose(x, w, *bias), gradient
    return transpose(x, w, *bias)


def _conv2d_with_subpixel_input_gradient(x, w):
    """tf.nn.conv2d(x, w, stride 2, SAME) whose input gradient, a transposed
    convolution to x's few channels, is a sub-pixel convolution."""
    @tf.custom_gradient
    def convolve(x, w):
        def gradient(dy):
            dx = _subpixel_conv2d_transpose(dy, w)
            dw = tf1.nn.conv2d_backprop_filter(x, tf.shape(w), dy, STRIDES, "SAME",
                                               name="weight_gradient")
            return dx, dw
        return tf.nn.conv2d(x, w, strides=STRIDES, padding="SAME"), gradient
    return convolve(x, w)


def _dilated_weight_gradient(x, dy, kernel_size):
    """The weight gradient [k, k, C, F] of a stride-2 SAME convolution of
    x [N, H, W, C] whose output gradient is dy [N, H/2, W/2, F].

    Tap (a, b) of it is the sum over n, i, j of padded x[n, 2i + a, 2j + b]
    times dy[n, i, j]: a stride-1 convolution of the padded x, with its C
    channels as the images and its batch as the channels, by dy as a
    filter [H/2, W/2, N, F] dilated by 2, whose k x k output pixels are
    the taps.
    """
    before = (kernel_size - 2) // 2
    padding = [before, kernel_size - 2 - before]
    # One scope, so that a step profile counts the copies with the convolution.
    with tf.name_scope("weight_gradient"):
        images = tf.transpose(tf.pad(x, [[0, 0], padding, padding, [0, 0]]), [3, 1, 2, 0])
        taps = tf.nn.conv2d(images, tf.transpose(dy, [1, 2, 0, 3]), [1, 1, 1, 1], "VALID",
                            dilations=[1, 2, 2, 1])
        return tf.transpose(taps, [1, 2, 0, 3])


def _conv2d_with_dilated_weight_gradient(x, w):
    """tf.nn.conv2d(x, w, stride 2, SAME); its input gradient TensorFlow's
    own, its weight gradient _dilated_weight_gradient."""
    @tf.custom_gradient
    def convolve(x, w):
        def gradient(dy):
            dx = tf1.nn.conv2d_backprop_input(tf.shape(x), w, dy, STRIDES, "SAME",
                                              name="input_gradient")
            return dx, _dilated_weight_gradient(x, dy, w.shape[0])
        return tf.nn.conv2d(x, w, strides=STRIDES, padding="SAME"), gradient
    return convolve(x, w)


def _conv2d_transpose_with_dilated_weight_gradient(x, w):
    """The transposed convolution of _conv2d_transpose; its input gradient
    TensorFlow's own (a stride-2 convolution of dy), its weight gradient
    _dilated_weight_gradient with the roles of x and dy swapped."""
    @tf.custom_gradient
    def transpose(x, w):
        def gradient(dy):
            dx = tf.nn.conv2d(dy, w, STRIDES, "SAME", name="input_gradient")
            return dx, _dilated_weight_gradient(dy, x, w.shape[0])
        return _conv2d_transpose(x, w), gradient
    return transpose(x, w)


def _patch_matmul_conv2d(x, w):
    """tf.nn.conv2d(x, w, stride 2, SAME) as patches x weights.

    The weight gradient is patches^T x dy. The input gradient is dy x
    weights^T, one row of patch gradients per output pixel, added back
    into the image where the patches overlap: faster than oneDNN's
    transposed convolution here (measured alone, D's last layer at full
    width: 20.7 against 27.0 ms for 5x5, 14.0 against 15.5 for 4x4), and
    than TensorFlow's gradient of the patches.
    """
    kernel_size, _, channels, filters = w.shape
    out_h, out_w = x.shape[1] // 2, x.shape[2] // 2

    @tf.custom_gradient
    def convolve(x, w):
        rows = _patches(x, kernel_size)
        w_rows = _patch_rows(w)
        y = tf.reshape(tf.matmul(rows, w_rows), [-1, out_h, out_w, filters])

        def gradient(dy):
            dy_rows = tf.reshape(dy, [-1, filters])
            patch_gradients = tf.matmul(_with_zero_row(dy_rows), w_rows, transpose_b=True,
                                        name="input_gradient")
            dx = _overlap_add(patch_gradients, out_h, out_w, kernel_size)
            dw = tf.matmul(rows, dy_rows, transpose_a=True, name="weight_gradient")
            return dx, _weights_from_patch_rows(dw, w.shape)
        return y, gradient
    return convolve(x, w)


def _with_zero_row(rows):
    """rows [M, K] with a row of zeros after the last."""
    return tf.concat([rows, tf.zeros([1, rows.shape[-1]], rows.dtype)], axis=0)


def _covering_taps(height, width, kernel_size):
    """[H * W, slots]: for each pixel of a height x width image, the taps
    (window * k * k + tap, in the order of _patches) of the stride-2, SAME
    convolution's windows that cover it; where a pixel has fewer than the
    most, its spare slots hold the image's number of taps, one past the last."""
    window_pixels = _window_pixels(height, width, kernel_size)
    covering = [np.flatnonzero(window_pixels == pixel) for pixel in range(height * width)]
    slots = max(len(indices) for indices in covering)
    return np.array([list(indices) + [len(window_pixels)] * (slots - len(indices))
                     for indices in covering], np.int32)


def _overlap_add(window_values, out_h, out_w, kernel_size):
    """[N * h * w + 1, k*k*C]: the values of the k x k windows of a stride-2,
    SAME convolution over an [N, 2h, 2w, C] image, one row per window (taps
    in the order of _patches) and then a row of zeros -> that image, each
    pixel the sum of the window taps that cover it.

    The taps that cover a pixel are gathered slot by slot (a pixel covered
    by fewer than the most reads a zero tap in its spare slots) and the
    slots added: 1.3-1.6 times as fast as adding shifted planes of taps and
    interleaving them, on an Intel Xeon (bench/ops_alone.py --only patches).
    The zero row comes from the matrix multiply that makes the values, from
    a zero row appended to its 2-4 MB input (_with_zero_row): appending a
    zero tap to the 26 MB of values took 2.2 ms a call at full width.
    float32 adds the slots with add_n; bf16 with one reduce_sum, which adds
    in float32 and ran in 0.59 times add_n's time (5x5, full width).
    """
    height, width = 2 * out_h, 2 * out_w
    channels = window_values.shape[-1] // kernel_size ** 2
    covering = _covering_taps(height, width, kernel_size).T  # [slot, pixel]
    slots, image_taps = len(covering), out_h * out_w * kernel_size ** 2
    with tf.name_scope("overlap_add"):
        taps = tf.reshape(window_values, [-1, channels])
        images = (tf.shape(window_values)[0] - 1) // (out_h * out_w)
        first_taps = tf.range(images)[:, None] * image_taps  # [N, 1]
        zero_tap = images * image_taps  # the first tap of the zero row
        indices = tf.reshape(tf.where((covering == image_taps)[:, None, :], zero_tap,
                                      first_taps + covering[:, None, :]), [slots, -1])
        if window_values.dtype == tf.float32:
            image = tf.add_n([tf.gather(taps, indices[slot]) for slot in range(slots)])
        else:
            image = tf.reduce_sum(tf.gather(taps, indices), axis=0)
        return tf.reshape(image, [-1, height, width, channels])


def _patch_matmul_conv2d_transpose(x, w, matmul_forward):
    """tf.nn.conv2d_transpose(x, w, stride 2, SAME) with both gradients from
    the patches of dy: the input gradient is the convolution patches(dy) x
    weights, the weight gradient patches(dy)^T x x.

    The forward is oneDNN's, or with `matmul_forward` the patch values
    x x weights^T and their overlap-add (see PATCH_FORWARD_MIN_WEIGHTS).
    """
    kernel_size, _, filters, channels = w.shape
    height, width = x.shape[1], x.shape[2]

    @tf.custom_gradient
    def transpose(x, w):
        w_rows = _patch_rows(w)
        x_rows = tf.reshape(x, [-1, channels])
        if matmul_forward:
            values = tf.matmul(_with_zero_row(x_rows), w_rows, transpose_b=True)
            y = _overlap_add(values, height, width, kernel_size)
        else:
            y = _conv2d_transpose(x, w)

        def gradient(dy):
            rows = _patches(dy, kernel_size)
            dx = tf.matmul(rows, w_rows, name="input_gradient")
            dw = tf.matmul(rows, x_rows, transpose_a=True, name="weight_gradient")
            return tf.reshape(dx, tf.shape(x)), _weights_from_patch_rows(dw, w.shape)
        return y, gradient
    return transpose(x, w)
