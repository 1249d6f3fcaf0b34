"""The graph: shapes at any batch size, variable split, batch norm, the layers
each network takes, HParams."""

import contextlib
import dataclasses
import re

import numpy as np
import pytest
import tensorflow as tf

from gan_model import HParams, ganModel, images_from_uint8

tf1 = tf.compat.v1

# The classic schedule: its D and G ops run apart, so a test can look at what
# each one does (with reuse_fake, the default, the G op runs the D op first).
TINY = HParams(gf_dim=8, df_dim=8, z_dim=16, batch_size=4, schedule="classic")


@contextlib.contextmanager
def built(hparams=TINY):
    """A training graph fed by placeholders, in a Session closed on the way out."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        real = tf1.placeholder(tf.float32, [None, hparams.output_h, hparams.output_w, 3])
        z = tf1.placeholder(tf.float32, [None, hparams.z_dim])
        model = ganModel(hparams)
        gan = model.build_model(real, z)
        step = tf1.train.get_or_create_global_step()
        d_op, g_op = model.optimizers(gan, step)
        sampled = model.generator(z, is_training=False)
        judged = model.discriminator(real, is_training=False)[0]
        init = tf1.global_variables_initializer()
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        yield dict(graph=graph, sess=sess, real=real, z=z, model=model, gan=gan,
                   d_op=d_op, g_op=g_op, sampled=sampled, judged=judged, step=step)


@pytest.fixture(scope="module")
def net():
    with built() as parts:
        yield parts
        parts["sess"].close()


def feed(net, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {net["real"]: rng.uniform(-1, 1, (batch, 64, 64, 3)),
            net["z"]: rng.uniform(-1, 1, (batch, TINY.z_dim))}


def variable(net, name):
    """The tf.Variable called `name` in the net's graph."""
    (found,) = [v for v in net["graph"].get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                if v.op.name == name]
    return found


@pytest.mark.parametrize("batch", [1, 7])
def test_shapes_do_not_depend_on_batch_size(net, batch):
    fake, sampled, judged = net["sess"].run(
        [net["gan"].fake_images, net["sampled"], net["judged"]], feed(net, batch))
    assert fake.shape == sampled.shape == (batch, 64, 64, 3)
    assert judged.shape == (batch, 1)
    assert np.abs(sampled).max() < 1 and 0 < judged.min() and judged.max() < 1


def test_other_output_sizes_build():
    with built(dataclasses.replace(TINY, output_h=32, output_w=48)) as parts:
        out = parts["sess"].run(parts["sampled"], {parts["z"]: np.zeros((2, TINY.z_dim))})
        assert out.shape == (2, 32, 48, 3)


def test_variables_split_by_scope_and_named_by_layer(net):
    with net["graph"].as_default():
        g_vars, d_vars = net["model"].split_variables()
        trainable = set(tf1.trainable_variables())
    assert set(g_vars) | set(d_vars) == trainable and not set(g_vars) & set(d_vars)
    names = {v.op.name for v in g_vars + d_vars}
    assert {"generator/deconv2/w", "generator/bn0/gamma", "discriminator/conv0/w",
            "discriminator/bn1/beta", "discriminator/linear/w"} <= names
    assert "discriminator/bn0/gamma" not in names  # no BN on D's first layer
    assert not any("moving" in name for name in names)


def test_stray_trainable_variable_is_refused(net):
    with net["graph"].as_default():
        tf1.get_variable("stray", [1])
        with pytest.raises(ValueError, match="stray"):
            net["model"].split_variables()
        tf1.get_collection_ref(tf1.GraphKeys.TRAINABLE_VARIABLES).pop()


def test_each_train_op_moves_only_its_own_networks_statistics():
    with built() as parts:
        sess = parts["sess"]
        g_stat = variable(parts, "generator/bn1/moving_mean")
        d_stat = variable(parts, "discriminator/bn2/moving_variance")
        g_weight = variable(parts, "generator/deconv1/w")
        d_weight = variable(parts, "discriminator/conv1/w")
        before = sess.run([g_stat, d_stat, g_weight, d_weight])
        sess.run(parts["d_op"], feed(parts, 4))
        after_d = sess.run([g_stat, d_stat, g_weight, d_weight])
        assert np.array_equal(before[0], after_d[0]) and np.array_equal(before[2], after_d[2])
        assert not np.array_equal(before[1], after_d[1]) and not np.array_equal(before[3], after_d[3])
        assert sess.run(parts["step"]) == 1  # the D op counts iterations
        sess.run(parts["g_op"], feed(parts, 4))
        after_g = sess.run([g_stat, d_stat, g_weight, d_weight])
        assert not np.array_equal(after_d[0], after_g[0]) and not np.array_equal(after_d[2], after_g[2])
        assert np.array_equal(after_d[1], after_g[1]) and np.array_equal(after_d[3], after_g[3])
        assert sess.run(parts["step"]) == 1
        parts["sess"].close()


def test_moving_averages_follow_the_batch_with_momentum():
    with built() as parts:
        sess = parts["sess"]
        moving = variable(parts, "generator/bn0/moving_mean")
        feeds = feed(parts, 4)
        # What the G op's batch normalises: the reshaped linear layer output.
        pre_bn = parts["graph"].get_tensor_by_name("generator/Reshape:0")
        batch_mean = sess.run(pre_bn, feeds).mean(axis=(0, 1, 2))
        sess.run(parts["g_op"], feeds)
        np.testing.assert_allclose(sess.run(moving), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
        parts["sess"].close()


def test_inference_uses_moving_averages_and_training_does_not():
    # Larger initial weights than the default 0.02, whose tanh output is
    # nearly 0 everywhere and would hide any difference.
    with built(dataclasses.replace(TINY, init_stddev=0.3)) as parts:
        sess = parts["sess"]
        z = {parts["z"]: np.random.default_rng(1).uniform(-1, 1, (3, TINY.z_dim))}
        infer_before, train_before = sess.run([parts["sampled"], parts["gan"].fake_images], z)
        moving = variable(parts, "generator/bn2/moving_mean")
        with parts["graph"].as_default():
            sess.run(tf1.assign(moving, tf.fill(moving.shape, 5.0)))
        infer_after, train_after = sess.run([parts["sampled"], parts["gan"].fake_images], z)
        assert np.abs(infer_after - infer_before).max() > 1e-3
        np.testing.assert_allclose(train_after, train_before, atol=1e-6)
        # One face at inference does not depend on its batch companions.
        alone = sess.run(parts["sampled"], {parts["z"]: z[parts["z"]][:1]})
        np.testing.assert_allclose(alone[0], infer_after[0], atol=1e-5)
        parts["sess"].close()


def test_losses_match_cross_entropy_definitions(net):
    gan = net["gan"]
    values = net["sess"].run([gan.d_loss, gan.d_loss_real, gan.d_loss_fake, gan.g_loss,
                              gan.d_real, gan.d_fake, gan.d_real_logits, gan.d_fake_logits],
                             feed(net, 5))
    d_loss, real, fake, g_loss, d_x, d_gz, real_logits, fake_logits = values

    def softplus(x):  # -log(sigmoid(-x)), cross-entropy against label 0
        return np.logaddexp(0.0, x)

    assert real == pytest.approx(softplus(-real_logits).mean(), rel=1e-5)  # real -> 1
    assert fake == pytest.approx(softplus(fake_logits).mean(), rel=1e-5)   # fake -> 0
    assert g_loss == pytest.approx(softplus(-fake_logits).mean(), rel=1e-5)  # fake -> 1
    assert d_loss == pytest.approx(real + fake, rel=1e-5)
    assert d_x == pytest.approx((1 / (1 + np.exp(-real_logits))).mean(), rel=1e-5)
    assert d_gz == pytest.approx((1 / (1 + np.exp(-fake_logits))).mean(), rel=1e-5)


def test_uint8_pixels_map_to_minus_one_to_one_in_the_graph():
    with tf.Graph().as_default(), tf1.Session() as sess:
        out = sess.run(images_from_uint8(tf.constant([[0, 255, 128]], tf.uint8)))
    np.testing.assert_allclose(out, [[-1, 1, 128 / 127.5 - 1]], atol=1e-6)


def test_hparams_validation_lists_every_problem():
    with pytest.raises(ValueError) as error:
        HParams(output_h=50, batch_size=0, learning_rate=-1.0, beta1=1.0).validate()
    message = str(error.value)
    for flag in ("--output_h", "--batch_size", "--learning_rate", "--beta1"):
        assert flag in message


def test_only_architecture_fields_count_as_architecture_differences():
    assert HParams().architecture_differences(HParams(learning_rate=1.0)) == []
    assert HParams().architecture_differences(HParams(gf_dim=8)) == [("gf_dim", 64, 8)]


def test_only_the_3_channel_layers_are_subpixel_convolutions(monkeypatch):
    import hardware
    monkeypatch.setattr(hardware, "onednn_without_avx512", lambda: False)
    with built() as parts:
        # A sub-pixel convolution is the graph's only stride-1 convolution.
        names = [op.name for op in parts["graph"].get_operations()
                 if op.type == "Conv2D" and op.get_attr("strides") == [1, 1, 1, 1]]
    places = {(name.startswith("gradients"), re.search(r"/(d?e?conv\d)/", name).group(1))
              for name in names}
    # G's last layer on the way forward, and D's first layer in its input
    # gradient (for G's update).
    assert places == {(False, "deconv4"), (True, "conv0")}


@pytest.mark.parametrize("precision, onednn_cpu, without_avx512, expected", [
    # fp32: D's conv3 (8x8 -> 4x4) and G's deconv1 (4x4 -> 8x8), where oneDNN
    # has no AVX-512 (the tiny model's fp32 4x4 layers keep oneDNN's kernels).
    ("fp32", True, True, {"conv3", "deconv1"}),
    ("fp32", True, False, set()),
    # bf16: the 4x4 layers are patch matrix multiplies; the 8x8 ones, D's
    # conv2 and G's deconv2, on oneDNN's CPU kernels.
    ("bf16", True, False, {"conv2", "deconv2"}),
    ("bf16", False, False, set()),
])
def test_only_the_layers_measured_faster_take_dilated_weight_gradients(
        precision, onednn_cpu, without_avx512, expected, monkeypatch):
    import hardware
    monkeypatch.setattr(hardware, "onednn_cpu_kernels", lambda: onednn_cpu)
    monkeypatch.setattr(hardware, "onednn_without_avx512", lambda: without_avx512)
    with built(dataclasses.replace(TINY, precision=precision)) as parts:
        names = [op.name for op in parts["graph"].get_operations()
                 if op.type == "Conv2D" and op.get_attr("dilations") == [1, 2, 2, 1]]
    # In the weight gradients only.
    assert all(name.startswith("gradients") for name in names)
    assert {re.search(r"/(d?e?conv\d)/", name).group(1) for name in names} == expected


@pytest.mark.parametrize("precision, without_avx512, rows", [
    ("fp32", True, True), ("fp32", False, False), ("bf16", True, False)])
def test_only_float32_batch_norm_without_avx512_runs_over_rows(precision, without_avx512,
                                                               rows, monkeypatch):
    import hardware
    monkeypatch.setattr(hardware, "onednn_without_avx512", lambda: without_avx512)
    with built(dataclasses.replace(TINY, precision=precision)) as parts:
        shapes = [op.inputs[0].shape.as_list() for op in parts["graph"].get_operations()
                  if op.type == "FusedBatchNormV3"]
    # Training's batch norms take rows of 4 pixels; inference's whole images.
    assert len(shapes) > 7
    assert any(shape[1:3] == [4, 1] for shape in shapes) == rows
    assert any(shape[1] == shape[2] == 8 for shape in shapes)


@pytest.mark.parametrize("kernel_size", [5, 4])
def test_only_the_4x4_layers_are_patch_matrix_multiplies(kernel_size, monkeypatch):
    import layers
    monkeypatch.setattr(layers, "PATCH_MATMUL_MIN_FP32_WEIGHTS", 0)  # a tiny model's too
    with built(dataclasses.replace(TINY, kernel_size=kernel_size)) as parts:
        types = {op.name: op.type for op in parts["graph"].get_operations()}
    # The patches and their overlap-add are gathers of pixels, named so.
    patches = {re.search(r"/(d?e?conv\d)/", name).group(1) for name, kind in types.items()
               if kind == "GatherV2" and re.search(r"/patches$|/overlap_add/", name)}
    # D's conv3 (8x8 -> 4x4) and, through its gradients, G's deconv1 (4x4 -> 8x8).
    assert patches == {"conv3", "deconv1"}
    assert types["discriminator/conv1/Conv2D"] == "Conv2D"


@pytest.mark.parametrize("kernel_size", [5, 4])  # TensorFlow's patches, then space_to_depth
def test_bf16_computes_in_bfloat16_and_keeps_float32_state(kernel_size):
    with built(dataclasses.replace(TINY, precision="bf16", kernel_size=kernel_size)) as parts:
        graph, sess = parts["graph"], parts["sess"]
        conv_types = {op.get_attr("T") for op in graph.get_operations()
                      if op.type in ("Conv2D", "Conv2DBackpropInput", "MatMul")}
        assert conv_types == {tf.bfloat16}
        state = [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                 if v.op.name != "global_step"]  # the step counter is int64
        assert {v.dtype.base_dtype for v in state} == {tf.float32}
        gan = parts["gan"]
        for tensor in (gan.d_loss, gan.g_loss, gan.fake_images, gan.d_real_logits):
            assert tensor.dtype == tf.float32
        before = sess.run(variable(parts, "generator/bn1/moving_variance"))
        for step in range(3):
            sess.run(parts["d_op"], feed(parts, 4, seed=step))
            sess.run(parts["g_op"], feed(parts, 4, seed=step))
        losses = sess.run([gan.d_loss, gan.g_loss], feed(parts, 4))
        assert np.all(np.isfinite(losses))
        assert not np.array_equal(before, sess.run(variable(parts, "generator/bn1/moving_variance")))
        parts["sess"].close()


@pytest.mark.parametrize("schedule", ["classic", "reuse_fake"])
def test_bf16_fakes_reach_d_without_a_round_trip_through_float32(schedule):
    """D judges G's images as G computed them, in bf16: a cast to float32 and
    back changes no value and costs a cast each way, forward and backward."""
    with built(dataclasses.replace(TINY, precision="bf16", schedule=schedule)) as parts:
        round_trips = [op.name for op in parts["graph"].get_operations()
                       if op.type == "Cast" and op.get_attr("DstT") == tf.bfloat16
                       and op.inputs[0].op.type == "Cast"
                       and op.inputs[0].op.get_attr("SrcT") == tf.bfloat16]
        assert round_trips == []
        assert parts["gan"].generated.dtype == tf.bfloat16


def test_precision_flag_is_validated():
    with pytest.raises(ValueError, match="--precision must be one of auto, fp32, bf16"):
        HParams(precision="fp8").validate()
    # "auto" is a valid flag, but the graph needs it resolved for the hardware.
    with pytest.raises(ValueError, match="must be resolved to one of fp32, bf16"):
        ganModel(dataclasses.replace(TINY, precision="auto"))


# ---------------------------------------------------------------------------
# Training levers: label smoothing, learning rates per network, EMA of G.
# ---------------------------------------------------------------------------

def test_real_label_is_the_target_of_real_images():
    with built(dataclasses.replace(TINY, real_label=0.9)) as parts:
        gan = parts["gan"]
        real, logits = parts["sess"].run([gan.d_loss_real, gan.d_real_logits], feed(parts, 5))
        # Cross-entropy against 0.9: 0.9 * -log(sigmoid(x)) + 0.1 * -log(1 - sigmoid(x)).
        expected = 0.9 * np.logaddexp(0.0, -logits) + 0.1 * np.logaddexp(0.0, logits)
        assert real == pytest.approx(expected.mean(), rel=1e-5)
        parts["sess"].close()


@pytest.mark.parametrize("frozen", ["generator", "discriminator"])
def test_each_network_steps_with_its_own_learning_rate(frozen):
    # Adam's first step moves every weight by about its learning rate, so
    # a network with a negligible rate stays put while the other moves.
    tiny_rate = {"generator": "g_learning_rate", "discriminator": "d_learning_rate"}[frozen]
    with built(dataclasses.replace(TINY, **{tiny_rate: 1e-12})) as parts:
        sess, data = parts["sess"], feed(parts, 4)
        weights = {net: variable(parts, name) for net, name in
                   (("generator", "generator/deconv1/w"), ("discriminator", "discriminator/conv1/w"))}
        before = sess.run(weights)
        sess.run(parts["d_op"], data)
        sess.run(parts["g_op"], data)
        after = sess.run(weights)
        moved = {net: np.abs(after[net] - before[net]).max() for net in weights}
        moving = ({"generator", "discriminator"} - {frozen}).pop()
        assert moved[frozen] < 1e-9 and moved[moving] > 1e-5
        parts["sess"].close()


def test_learning_rates_default_to_the_shared_one():
    hp = HParams(learning_rate=3e-4, d_learning_rate=1e-4)
    assert (hp.d_lr, hp.g_lr) == (1e-4, 3e-4)
    with pytest.raises(ValueError, match="--g_learning_rate"):
        HParams(g_learning_rate=-1.0).validate()
    with pytest.raises(ValueError, match="--real_label"):
        HParams(real_label=0.4).validate()
    with pytest.raises(ValueError, match="--g_ema_decay"):
        HParams(g_ema_decay=1.0).validate()


def ema_pairs(parts):
    """[(generator variable, its EMA shadow)] of a built graph."""
    return [(variable(parts, name), shadow)
            for name, shadow in parts["model"].ema_shadows.items()]


def test_ema_shadows_cover_weights_and_statistics_and_train_nothing():
    with built() as parts:
        names = {shadow.op.name for _, shadow in ema_pairs(parts)}
        assert {"generator_ema/deconv1/w", "generator_ema/bn1/moving_mean",
                "generator_ema/deconv4/b"} <= names
        assert not any("adam" in name for name in names)
        with parts["graph"].as_default():
            assert not set(tf1.trainable_variables()) & {s for _, s in ema_pairs(parts)}
        # They start equal to the weights, and with decay 0 they stay copies.
        sess, data = parts["sess"], feed(parts, 4)
        for live, shadow in ema_pairs(parts):
            np.testing.assert_array_equal(*sess.run([live, shadow]))
        sess.run(parts["d_op"], data)
        sess.run(parts["g_op"], data)
        for live, shadow in ema_pairs(parts):
            np.testing.assert_array_equal(*sess.run([live, shadow]))
        parts["sess"].close()


def test_ema_update_follows_the_ramped_decay():
    with built(dataclasses.replace(TINY, g_ema_decay=0.999)) as parts:
        sess, data = parts["sess"], feed(parts, 4)
        pairs = ema_pairs(parts)
        start = sess.run([live for live, _ in pairs])
        sess.run(parts["d_op"], data)  # the global step is now 1
        sess.run(parts["g_op"], data)
        decay = min(0.999, (1 + 1) / (10 + 1))
        for (live, shadow), initial in zip(pairs, start):
            trained, averaged = sess.run([live, shadow])
            np.testing.assert_allclose(averaged, decay * initial + (1 - decay) * trained,
                                       rtol=1e-5, atol=1e-7)
        parts["sess"].close()


def test_generator_on_ema_weights_differs_from_the_trained_one():
    with built(dataclasses.replace(TINY, g_ema_decay=0.99)) as parts:
        sess, data = parts["sess"], feed(parts, 4)
        with parts["graph"].as_default():
            averaged = parts["model"].generator(parts["z"], is_training=False, use_ema=True)
            for _ in range(3):
                sess.run(parts["d_op"], data)
                sess.run(parts["g_op"], data)
            trained_faces, ema_faces = sess.run([parts["sampled"], averaged], data)
        assert averaged.shape.as_list() == [None, 64, 64, 3]
        # A freshly initialised G draws near-zero pictures: compare relatively.
        assert np.abs(trained_faces - ema_faces).max() > 0.05 * np.abs(trained_faces).max()
        parts["sess"].close()


# ---------------------------------------------------------------------------
# Levers for speed: kernel size, and the G update reusing the D update's G(z).
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(64, 64), (32, 48), (96, 80)])
def test_kernel_4_keeps_every_shape(height, width):
    hparams = dataclasses.replace(TINY, kernel_size=4, output_h=height, output_w=width)
    with built(hparams) as parts:
        fake, judged = parts["sess"].run([parts["sampled"], parts["judged"]], {
            parts["z"]: np.zeros((3, TINY.z_dim)), parts["real"]: np.zeros((5, height, width, 3))})
        shapes = {v.op.name: v.shape.as_list() for v in tf1.trainable_variables()}
    assert fake.shape == (3, height, width, 3) and judged.shape == (5, 1)
    assert shapes["generator/deconv4/w"] == [4, 4, 3, TINY.gf_dim]
    assert shapes["discriminator/conv0/w"] == [4, 4, 3, TINY.df_dim]
    assert HParams().architecture_differences(hparams)[-1] == ("kernel_size", 5, 4)


def test_reuse_fake_schedule_takes_the_classic_iteration_in_one_run():
    """The classic G update recomputes G(z) with G's weights unchanged by the D
    update, so reusing the D update's G(z) is the same iteration, one G
    forward pass cheaper: both schedules end with the same weights."""
    weights = {}
    for schedule in ("classic", "reuse_fake"):
        with built(dataclasses.replace(TINY, schedule=schedule)) as parts:
            sess, data = parts["sess"], feed(parts, 4)
            for _ in range(2):
                if schedule == "classic":
                    sess.run(parts["d_op"], data)
                    sess.run(parts["g_op"], data)
                else:  # its G op waits for the D op: one run does both
                    sess.run([parts["d_op"], parts["g_op"]], data)
            names = sorted(v.op.name for v in tf1.global_variables()
                           if v.op.name.startswith(("generator/", "discriminator/")))
            weights[schedule] = dict(zip(names, sess.run(
                [variable(parts, name) for name in names])))
            assert sess.run(parts["step"]) == 2
    assert weights["classic"].keys() == weights["reuse_fake"].keys()
    for name, value in weights["classic"].items():
        np.testing.assert_allclose(weights["reuse_fake"][name], value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_schedule_and_kernel_flags_are_validated():
    with pytest.raises(ValueError, match="--schedule must be one of classic, reuse_fake"):
        HParams(schedule="fast").validate()
    with pytest.raises(ValueError, match="--g_steps 2 needs --schedule classic"):
        HParams(g_steps=2).validate()
    HParams(schedule="classic", g_steps=2).validate()
    with pytest.raises(ValueError, match="--kernel_size must be at least 2"):
        HParams(kernel_size=1).validate()
