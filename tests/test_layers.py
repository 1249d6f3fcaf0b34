"""The layers: each faster form computes what TensorFlow's own op computes,
values and gradients, within rounding; and which form a layer takes."""

import numpy as np
import pytest
import tensorflow as tf

import layers

tf1 = tf.compat.v1


@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_leaky_relu_value_and_gradient_match_tensorflows(slope):
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), tf1.Session() as sess:
        x = tf.constant(rng.normal(size=(4, 5)), tf.float32)
        weights = tf.constant(rng.normal(size=(4, 5)), tf.float32)
        fetches = []
        for activation in (layers.leaky_relu, tf.nn.leaky_relu):
            y = activation(x, slope)
            fetches.append((y, tf.gradients(tf.reduce_sum(y * weights), x)[0]))
        (ours, ours_grad), (theirs, theirs_grad) = sess.run(fetches)
    np.testing.assert_allclose(ours, theirs)
    np.testing.assert_allclose(ours_grad, theirs_grad)


# Relative to the largest value: float32 sums taken in another order.
PATCH_MATMUL_TOLERANCE = 1e-5
GRADIENT_NAMES = ("value", "input gradient", "weight gradient", "bias gradient")


def outputs_and_gradients(sess, rng, pairs):
    """{name: (ours, theirs)} for pairs {name: (inputs, ours, theirs)}: each
    output with its gradients to `inputs`, under the same random upstream
    gradient for both."""
    fetches = {}
    for name, (inputs, ours, theirs) in pairs.items():
        upstream = tf.constant(rng.normal(size=theirs.shape), tf.float32)
        fetches[name] = [[y] + tf.gradients(tf.reduce_sum(y * upstream), inputs)
                         for y in (ours, theirs)]
    return sess.run(fetches)


def assert_within_rounding(values):
    for name, (ours, theirs) in values.items():
        assert len(ours) == len(theirs), name
        for what, a, b in zip(GRADIENT_NAMES, ours, theirs):
            assert a.shape == b.shape, (name, what)
            error = np.abs(a - b).max() / np.abs(b).max()
            assert error < PATCH_MATMUL_TOLERANCE, (name, what, error)


@pytest.mark.parametrize("kernel_size", [3, 4, 5, 6])
def test_patch_matmul_layers_match_tensorflows_convolutions(kernel_size):
    """The 4x4 layers written as patch matrix multiplies compute what
    tf.nn.conv2d and conv2d_transpose compute, values and both gradients, on
    a non-square image, odd and even kernels, with either forward of the
    transposed one."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), tf1.Session() as sess:
        x = tf.constant(rng.normal(size=(3, 8, 6, 6)), tf.float32)    # conv: 8x6 -> 4x3
        x_small = tf.constant(rng.normal(size=(3, 4, 3, 7)), tf.float32)  # deconv: 4x3 -> 8x6
        conv_w = tf.constant(rng.normal(size=(kernel_size, kernel_size, 6, 5)), tf.float32)
        deconv_w = tf.constant(rng.normal(size=(kernel_size, kernel_size, 2, 7)), tf.float32)
        pairs = {
            "conv": ((x, conv_w), layers._patch_matmul_conv2d(x, conv_w),
                     tf.nn.conv2d(x, conv_w, layers.STRIDES, "SAME")),
            **{f"deconv, matmul forward {forward}": (
                (x_small, deconv_w),
                layers._patch_matmul_conv2d_transpose(x_small, deconv_w, forward),
                layers._conv2d_transpose(x_small, deconv_w)) for forward in (False, True)}}
        values = outputs_and_gradients(sess, rng, pairs)
    assert_within_rounding(values)


@pytest.mark.parametrize("kernel_size", [4, 5])
def test_bf16_overlap_add_rounds_once(kernel_size):
    """The bf16 overlap-add sums each pixel's taps in float32 and rounds the
    sum to bf16 once: within one bf16 rounding of the float32 overlap-add,
    where adding in bf16 tap by tap drifts further. The batch size is known
    only at run time, as in training."""
    rng = np.random.default_rng(3)
    depth = kernel_size ** 2 * 16
    values = np.concatenate([rng.normal(size=(3 * 4 * 3, depth)), np.zeros((1, depth))])
    with tf.Graph().as_default(), tf1.Session() as sess:
        fed = tf1.placeholder(tf.float32, [None, depth])
        in_bf16 = tf.cast(fed, tf.bfloat16)  # the float32 sum gets the same inputs
        ours, exact = sess.run(
            [tf.cast(layers._overlap_add(in_bf16, 4, 3, kernel_size), tf.float32),
             layers._overlap_add(tf.cast(in_bf16, tf.float32), 4, 3, kernel_size)],
            {fed: values})
    assert ours.shape == exact.shape == (3, 8, 6, 16)
    # Half a bf16 ulp (7 fraction bits) of the sum, and float32's own rounding.
    assert np.all(np.abs(ours - exact) <= (2.0 ** -8 + 2.0 ** -20) * np.abs(exact))


@pytest.mark.parametrize("kernel_size", [3, 4, 5, 6])
def test_subpixel_layers_match_tensorflows_convolutions(kernel_size):
    """The transposed convolutions to 3 channels written as sub-pixel
    convolutions compute what tf.nn.conv2d_transpose and conv2d compute,
    values and all gradients, on a non-square image, with and without the
    bias that G's last layer adds inside."""
    rng = np.random.default_rng(1)
    with tf.Graph().as_default(), tf1.Session() as sess:
        small = tf.constant(rng.normal(size=(2, 5, 7, 6)), tf.float32)
        image = tf.constant(rng.normal(size=(2, 10, 14, 3)), tf.float32)
        w = tf.constant(rng.normal(size=(kernel_size, kernel_size, 3, 6)), tf.float32)
        bias = tf.constant(rng.normal(size=(3,)), tf.float32)
        subpixel = layers._subpixel_conv2d_transpose_with_native_gradients
        pairs = {
            "deconv": ((small, w), subpixel(small, w), layers._conv2d_transpose(small, w)),
            "deconv with bias": ((small, w, bias), subpixel(small, w, bias),
                                 layers._conv2d_transpose(small, w) + bias),
            "conv": ((image, w), layers._conv2d_with_subpixel_input_gradient(image, w),
                     tf.nn.conv2d(image, w, layers.STRIDES, "SAME"))}
        values = outputs_and_gradients(sess, rng, pairs)
    assert len(values["deconv with bias"][0]) == 4  # the bias gradient too
    assert_within_rounding(values)


def test_the_few_channel_depth_to_space_is_tensorflows():
    """The same values as tf.nn.depth_to_space, exactly, on a non-square
    input whose batch size is known only at run time."""
    y = np.random.default_rng(2).normal(size=(2, 3, 5, 12)).astype(np.float32)
    with tf.Graph().as_default(), tf1.Session() as sess:
        fed = tf1.placeholder(tf.float32, [None, 3, 5, 12])
        ours, theirs = sess.run([layers._few_channel_depth_to_space(fed),
                                 tf.nn.depth_to_space(fed, 2)], {fed: y})
    assert ours.shape == (2, 6, 10, 3)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("activation", [None, tf.nn.relu])
def test_batch_norm_over_rows_of_pixels_matches_whole_images(activation, monkeypatch):
    """Batch norm regrouped into rows of a few pixels normalises, takes its
    gradients and moves its averages as over whole images, within rounding,
    with and without the ReLU that it applies inside."""
    import hardware
    rng = np.random.default_rng(3)
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    with tf.Graph().as_default() as graph, tf1.Session() as sess:
        x = tf.constant(rng.normal(1.0, 2.0, size=(3, 4, 6, 5)), tf.float32)
        upstream = tf.constant(rng.normal(size=(3, 4, 6, 5)), tf.float32)
        fetches, updates = {}, {}
        for rows in (True, False):
            monkeypatch.setattr(hardware, "onednn_without_avx512", lambda rows=rows: rows)
            updates[rows] = []
            with tf1.variable_scope(f"rows_{rows}"):
                y = layers.batch_norm(x, "bn", True, 1e-5, 0.9, updates[rows], activation)
                variables = {v.op.name.split("/")[-1]: v for v in tf1.global_variables()
                             if v.op.name.startswith(f"rows_{rows}/")}
            fetches[rows] = [y, *tf.gradients(tf.reduce_sum(y * upstream),
                                              [x, variables["gamma"], variables["beta"]])]
            sess.run(tf1.variables_initializer(list(variables.values())))
            sess.run([variables["gamma"].assign(gamma), variables["beta"].assign(beta)])
            sess.run(updates[rows])
            fetches[rows].append([variables["moving_mean"], variables["moving_variance"]])
        inputs = {rows: [op.inputs[0].shape.as_list() for op in graph.get_operations()
                         if op.type == "FusedBatchNormV3" and op.name.startswith(f"rows_{rows}/")]
                  for rows in (True, False)}
        (*ours, ours_moved), (*theirs, theirs_moved) = sess.run([fetches[True], fetches[False]])
    assert inputs == {True: [[18, 4, 1, 5]], False: [[3, 4, 6, 5]]}
    assert ours[0].shape == (3, 4, 6, 5)
    if activation:
        assert (ours[0] == 0).any() and (ours[0] >= 0).all()
    assert_within_rounding({"batch norm": (ours, theirs)})
    np.testing.assert_allclose(ours_moved, theirs_moved, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 4, 5, 6])
def test_dilated_weight_gradients_match_tensorflows(kernel_size):
    """The convolution and the transposed one with their weight gradients as
    dilated convolutions over the batch compute what TensorFlow's compute,
    values and both gradients, on a non-square image."""
    rng = np.random.default_rng(2)
    with tf.Graph().as_default(), tf1.Session() as sess:
        image = tf.constant(rng.normal(size=(3, 10, 14, 5)), tf.float32)
        small = tf.constant(rng.normal(size=(3, 5, 7, 6)), tf.float32)
        w = tf.constant(rng.normal(size=(kernel_size, kernel_size, 5, 6)), tf.float32)
        pairs = {
            "conv": ((image, w), layers._conv2d_with_dilated_weight_gradient(image, w),
                     tf.nn.conv2d(image, w, layers.STRIDES, "SAME")),
            "deconv": ((small, w),
                       layers._conv2d_transpose_with_dilated_weight_gradient(small, w),
                       layers._conv2d_transpose(small, w))}
        values = outputs_and_gradients(sess, rng, pairs)
    assert_within_rounding(values)


@pytest.mark.parametrize("kernel_size", [5, 4])
def test_a_4x4_convolution_is_a_patch_matrix_multiply_at_full_width_or_in_bf16(kernel_size):
    # D's last layer (8x8 -> 4x4) at full and at half width, and at half width in bf16.
    for channels, dtype, patch_matmul in ((256, tf.float32, True), (128, tf.float32, False),
                                          (128, tf.bfloat16, True)):
        with tf.Graph().as_default() as graph:
            layers.conv2d(tf.zeros([1, 8, 8, channels], dtype), 2 * channels, 0.02, "conv3",
                             bias=False, kernel_size=kernel_size)
            types = {op.type for op in graph.get_operations()}
        assert ("MatMul" in types) == patch_matmul, (channels, dtype)
        assert ("Conv2D" in types) != patch_matmul, (channels, dtype)


@pytest.mark.parametrize("kernel_size", [5, 4])
def test_only_wide_float32_4x4_transposed_convolutions_run_forward_as_a_matmul(kernel_size):
    forward_types = {}
    # G's first layer at full width, at full width in bf16, and at half width
    # in bf16 (in float32 half width is oneDNN's transposed convolution).
    for channels, dtype in ((512, tf.float32), (512, tf.bfloat16), (256, tf.bfloat16)):
        with tf.Graph().as_default() as graph:
            layers.deconv2d(tf.zeros([1, 4, 4, channels], dtype), channels // 2, 0.02,
                               "deconv1", bias=False, kernel_size=kernel_size)
            forward_types[channels, dtype] = {op.type for op in graph.get_operations()}
    for layer, types in forward_types.items():
        matmul_forward = layer == (512, tf.float32)
        assert ("MatMul" in types) == matmul_forward, layer
        assert ("Conv2DBackpropInput" in types) != matmul_forward, layer


@pytest.mark.parametrize("channels", [8, 64])  # reductions; a matrix multiply by ones
def test_bf16_bias_gradients_are_summed_in_float32(channels):
    """A bias gradient sums the output gradient over the batch and the image:
    65,536 values a channel here. Summed in bf16 (BiasAddGrad on the CPU)
    the total stalls once it is a few hundred; it must be the float32 sum,
    within one bf16 rounding."""
    assert 8 < layers.BF16_BIAS_MATMUL_MIN_CHANNELS <= 64
    rng = np.random.default_rng(3)
    upstream = rng.normal(1.0, 1.0, size=(64, 32, 32, channels)).astype(np.float32)
    with tf.Graph().as_default(), tf1.Session() as sess:
        y = tf.zeros([64, 32, 32, channels], tf.bfloat16)
        with tf1.variable_scope("layer"):
            out = layers._add_bias(y, channels)
        bias = tf1.trainable_variables()[0]
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * upstream)
        sess.run(tf1.global_variables_initializer())
        got, rounded = sess.run([tf.gradients(loss, bias)[0],
                                 tf.cast(tf.cast(upstream, tf.bfloat16), tf.float32)])
    expected = rounded.sum(axis=(0, 1, 2), dtype=np.float64)
    assert np.abs(got - expected).max() <= 2 ** -7 * np.abs(expected).max(), (got, expected)
