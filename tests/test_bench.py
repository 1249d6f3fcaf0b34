"""The speed benchmark's own arithmetic: the FLOP count and the step profile."""

import collections
import dataclasses
import re
import sys

import pytest

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "bench"))

import hardware  # noqa: E402
import step_profile  # noqa: E402
import train_speed  # noqa: E402
from gan_model import HParams  # noqa: E402

TINY = HParams(gf_dim=8, df_dim=8, z_dim=16, batch_size=4)


def test_reuse_fake_iteration_counts_one_g_forward_less():
    classic = train_speed.iteration_flops(dataclasses.replace(TINY, schedule="classic"))
    reused = train_speed.iteration_flops(dataclasses.replace(TINY, schedule="reuse_fake"))
    g_forward = sum(flops for layer, flops in train_speed.layer_flops(TINY).items()
                    if layer.startswith("G "))
    assert classic - reused == TINY.batch_size * g_forward


def test_the_pytorch_reference_takes_the_same_iteration_with_either_schedule():
    """Computing G(z) once or twice an iteration gives the same weights, as in
    this repo's two schedules (tests/test_gan_model.py)."""
    torch = pytest.importorskip("torch")
    from torch_reference import TorchDCGAN
    weights = {}
    for recompute in (False, True):
        model = TorchDCGAN(batch_size=4, z_dim=16, gf_dim=8, df_dim=8,
                           recompute_fake=recompute)
        for _ in range(2):
            model.step()
        weights[recompute] = [p.detach().clone() for net in (model.g, model.d)
                              for p in net.parameters()]
    for once, again in zip(weights[False], weights[True]):
        torch.testing.assert_close(once, again, rtol=1e-4, atol=1e-6)


def test_kernel_size_scales_the_convolutions_flops_by_its_square():
    five = train_speed.layer_flops(TINY)
    four = train_speed.layer_flops(dataclasses.replace(TINY, kernel_size=4))
    assert four["D conv2"] * 25 == five["D conv2"] * 16
    assert four["G linear"] == five["G linear"]


def test_bf16_is_timed_by_default_only_where_it_is_native(monkeypatch, capsys):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(hardware, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_model_and_flags", lambda: ("x", {"avx2", "avx512_bf16"}))
    assert train_speed.parse_args([]).precisions == "fp32,bf16"
    monkeypatch.setattr(hardware, "cpu_model_and_flags", lambda: ("x", {"avx2"}))
    assert train_speed.parse_args([]).precisions == "fp32"
    assert "bf16 not timed (the CPU has neither" in capsys.readouterr().out
    # Asked for by name, emulated bf16 is still timed.
    assert train_speed.parse_args(["--precisions", "fp32,bf16"]).precisions == "fp32,bf16"


def test_bf16_is_not_timed_where_a_onednn_cap_leaves_no_bf16_kernels(monkeypatch, capsys):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert train_speed.parse_args([]).precisions == "fp32"
    assert train_speed.parse_args(["--precisions", "fp32,bf16"]).precisions == "fp32"
    assert "bf16 not timed: --precision bf16 cannot run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_speed.parse_args(["--precisions", "bf16"])
    assert "no precision left to time" in capsys.readouterr().err


def test_the_pytorch_example_gets_a_flop_rate_only_where_it_does_the_recipes_work(capsys):
    args = train_speed.parse_args(["--recipe", "--rounds", "1"])
    recipe = train_speed.hparams_of(args)
    times = {"tensorflow fp32": [0.1], "pytorch example": [0.2]}
    train_speed.print_speeds(args, recipe, times, {"fp32": 1000.0})
    example = capsys.readouterr().out.splitlines()[-1].split()
    flops = train_speed.iteration_flops(recipe)
    # "pytorch", "example", images/s, s/iter, GFLOP/s, share of the matmul rate, ratio
    assert example[4] == f"{flops / 0.2 / 1e9:.0f}" and example[-1] == "1.00x"
    classic = dataclasses.replace(recipe, schedule="classic")
    train_speed.print_speeds(args, classic, times, {"fp32": 1000.0})
    assert len(capsys.readouterr().out.splitlines()[-1].split()) == len(example) - 2


def test_the_goal_bound_puts_each_layer_pass_at_the_rate_or_its_own_time(capsys):
    flops = {"G deconv1": 1e9, "D conv1": 2e9}  # per image; batch 1, rate 10 GFLOP/s
    groups = {("G deconv1", "forward"): [0.5, 1],         # 0.1 s at the rate
              ("D conv1", "input gradient"): [0.3, 2],    # faster than the rate's 0.4 s
              ("batch norm", None): [0.6, 5], ("other", None): [0.1, 3]}
    bound = step_profile.goal_bound(groups, flops, 1, 10.0)
    assert bound == pytest.approx((1.5, 0.8, 0.4))
    verdicts = {}
    # Timed, the step took 3 s; the goal allows `allowed` of the op time's 1.5 s.
    for allowed in (0.7, 1.0, 1.2, 2.0):
        step_profile.print_goal(1.5, "pytorch example", 3 * allowed, 3.0, bound)
        verdicts[allowed] = capsys.readouterr().out.strip().splitlines()
    assert "one op at a time, 700.0 of the 1500.0 ms" in verdicts[0.7][0]
    assert "the layers alone take longer" in verdicts[0.7][-1]
    assert "out of reach even with every layer pass at the" in verdicts[1.0][-1]
    assert "needs 300.0 ms less op time, 75% of what the layers lose" in verdicts[1.2][-1]
    assert "already as fast as the goal asks" in verdicts[2.0][-1]
    assert "already 1.33x faster than that" in verdicts[2.0][0]


def test_profile_counts_the_dilated_weight_gradients_copies_in_their_pass(monkeypatch):
    import hardware
    monkeypatch.setattr(hardware, "onednn_without_avx512", lambda: True)
    runner = train_speed.TensorFlowRun(dataclasses.replace(TINY, kernel_size=4),
                                       inter_op_threads=1)
    runner.step()
    traced = step_profile.TracedSession(runner.sess)
    runner.step(traced)
    ops = [(name, kind) for name, kind, _ in traced.traced_ops()
           if re.search(r"/(conv3|deconv1)/.*weight_gradient", name)]
    ops = [(name, kind) for name, kind in ops  # the copies and the convolution
           if "Conv2D" in kind or step_profile.LAYOUT_OPS.fullmatch(kind)]
    kinds = " ".join(kind for _, kind in ops)
    assert "Conv2D" in kinds and "Transpose" in kinds and "Pad" in kinds
    for name, kind in ops:
        assert step_profile.op_group(name, kind)[1] == "weight gradient", (name, kind)


def test_profile_counts_bias_sums_as_the_layers_bias():
    """layers.py's bias gradients (name scope bias_gradient) are reductions,
    or in bf16 a matrix multiply by ones: never a pass of the layer."""
    scope = "gradients/discriminator/conv0/IdentityN_1_grad/bias_gradient/"
    for kind in ("_MklMatMul", "MatMul", "Sum"):
        assert step_profile.op_group(scope + "MatMul", kind) == ("D conv0 bias", None)
    assert step_profile.op_group("gradients/discriminator/conv0/BiasAdd_grad/BiasAddGrad",
                                 "BiasAddGrad") == ("D conv0 bias", None)
    assert step_profile.op_group("discriminator/conv1/Conv2D", "_MklNativeConv2D") == (
        "D conv1", "forward")


@pytest.mark.parametrize("schedule, kernel_size, precision",
                         [("classic", 5, "fp32"), ("reuse_fake", 4, "fp32"),
                          ("reuse_fake", 5, "bf16")])
def test_profile_puts_every_layer_pass_in_its_row(schedule, kernel_size, precision,
                                                  monkeypatch):
    import layers
    monkeypatch.setattr(layers, "PATCH_MATMUL_MIN_FP32_WEIGHTS", 0)  # a tiny model's too
    hparams = dataclasses.replace(TINY, schedule=schedule, g_ema_decay=0.999,
                                  kernel_size=kernel_size, precision=precision)
    runner = train_speed.TensorFlowRun(hparams, inter_op_threads=1)
    runner.step()
    traced = step_profile.TracedSession(runner.sess)
    runner.step(traced)
    groups = traced.groups(1)
    layer_names = train_speed.layer_flops(hparams)
    for layer in layer_names:
        assert groups[(layer, "forward")][1] >= 1, layer
        assert groups[(layer, "weight gradient")][1] >= 1, layer
    for layer in set(layer_names) - {"G linear", "D conv0"}:  # no input gradient below them
        assert groups[(layer, "input gradient")][1] >= 1, layer
    # D's first layer needs its input gradient only for G's update.
    assert groups[("D conv0", "input gradient")][1] == 1
    # Each pass of a convolution is one op call per use: D runs three times.
    assert groups[("D conv2", "forward")][1] == 3
    for name in ("batch norm", "Adam", "G's EMA", "finiteness check",
                 "G deconv4 bias"):  # the last, a sum that layers.py names
        assert groups[(name, None)][1] > 0, name
    # No convolution or matrix multiply is left out of the layers' rows, nor
    # the gathers of the patch matrix multiplies' patches and any op of
    # their overlap-add (the losses' means have gathers of their own).
    node_types = [kind for _, kind, _ in traced.traced_ops()]
    assert any("Conv2D" in kind for kind in node_types)
    stray = [(name, kind) for name, kind, _ in traced.traced_ops()
             if ("Conv2D" in kind or "MatMul" in kind or "/overlap_add/" in name
                 or (kind == "GatherV2" and step_profile.LAYER.search(name)))
             and step_profile.op_group(name, kind)[0] == "other"]
    assert "GatherV2" in node_types
    assert not stray
    # The largest single ops of the rest: none of a layer's pass, in order,
    # the first the costliest of them all.
    largest = traced.largest_outside_layers(1, 5)
    assert len(largest) == 5
    assert [row[0] for row in largest] == sorted((row[0] for row in largest), reverse=True)
    for _, group, kind, name in largest:
        assert step_profile.op_group(name, kind) == (group, None), name
    per_op = collections.Counter()  # an op runs in each of the step's runs
    for name, kind, seconds in traced.traced_ops():
        if not step_profile.op_group(name, kind)[1]:
            per_op[name] += seconds
    assert largest[0][0] == pytest.approx(max(per_op.values()))


def test_the_race_trains_the_pytorch_example_in_a_process_of_its_own(tmp_path):
    """It trains on the faces given, keeps training across calls, and its
    faces come back as uint8 images."""
    pytest.importorskip("torch")
    import numpy as np
    from torch_dcgan import ExampleProcess
    faces = np.random.default_rng(0).integers(0, 256, (130, 64, 64, 3), np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    example = ExampleProcess(tmp_path / "faces.npy", seed=0, ngf=8, ndf=8)
    try:
        first = example.train_until(0.5)
        second = example.train_until(1.0)
        sampled = example.sample(5, 0, tmp_path / "sampled.npy")
        again = example.sample(5, 0, tmp_path / "again.npy")
    finally:
        example.close()
    assert 0 < first < second
    assert sampled.shape == (5, 64, 64, 3) and sampled.dtype == np.uint8
    np.testing.assert_array_equal(sampled, again)  # sampling leaves the model as it was
    assert sampled.std() > 0


def test_the_race_trains_this_repos_side_in_a_train_gan_process_of_its_own(
        tmp_path, demo_dir, capsys):
    """Each segment is a train_gan.py command: a second one resumes the
    first one's run, its output comes through indented, and a failed
    command stops the race with the command in the message."""
    import gan_run
    import race
    flags = ["--batch_size", "8", "--z_dim", "16", "--kernel_size", "4"]
    steps = []
    for _ in range(2):
        race.train_ours(flags, tmp_path / "run", demo_dir, tmp_path / "cache", 0.05, 8, 0)
        with gan_run.Generator(tmp_path / "run" / "ckpt", log=lambda *_: None) as generator:
            steps.append(generator.step)
            assert generator.hparams.gf_dim == 8 and generator.hparams.kernel_size == 4
    assert 0 < steps[0] < steps[1]
    output = capsys.readouterr().out
    assert "    training on 40 images" in output and "    resuming" in output.lower()
    with pytest.raises(SystemExit, match="train_gan.py failed .* --no_such_flag"):
        race.train_ours(["--no_such_flag"], tmp_path / "bad", demo_dir, tmp_path / "cache",
                        0.05, 8, 0)


def test_rounds_alternate_their_order():
    names = ["a", "b", "c"]
    assert [train_speed.alternating(names, i) for i in range(3)] == [
        names, names[::-1], names]


def test_layer_ab_builds_each_variant_with_its_constants_and_puts_them_back():
    import layer_ab
    import layers
    kept = layers.PATCH_FORWARD_MIN_WEIGHTS, layers.PATCH_MATMUL_MIN_FP32_WEIGHTS
    # At this width only thresholds of 0 put G's first layer forward on the matmul.
    runs = {name: layer_ab.build(TINY, constants) for name, constants in
            (("as is", {}), ("matmul forward", {"PATCH_MATMUL_MIN_FP32_WEIGHTS": 0,
                                                "PATCH_FORWARD_MIN_WEIGHTS": 0}))}
    assert (layers.PATCH_FORWARD_MIN_WEIGHTS, layers.PATCH_MATMUL_MIN_FP32_WEIGHTS) == kept
    for name, run in runs.items():
        forward = {op.type for op in run.parts.graph.get_operations()
                   if op.name.startswith("generator/deconv1/")}
        assert ("Conv2DBackpropInput" in forward) == (name == "as is"), name
        assert run.step()[0] > 0  # the D loss of a real step


def test_layer_ab_refuses_what_it_cannot_set():
    import layer_ab
    assert layer_ab.parse_variant(" off : PATCH_MATMUL_MAX_PIXELS=0, SUBPIXEL_MAX_CHANNELS=0") \
        == ("off", {"PATCH_MATMUL_MAX_PIXELS": 0, "SUBPIXEL_MAX_CHANNELS": 0})
    for text, message in (("no settings", "expected"), ("x: STRIDES=2", "is not one of"),
                          ("x: PATCH_MATMUL_MAX_PIXELS=big", "whole number")):
        with pytest.raises(ValueError, match=message):
            layer_ab.parse_variant(text)


def test_layer_ab_variant_of_flags_changes_only_those_hyperparameters():
    import layer_ab
    args = layer_ab.parse_args(["--recipe", "--variant", "two runs: --schedule classic"])
    changed, constants, settings = args.variants["two runs"]
    assert (args.hparams.schedule, changed.schedule) == ("reuse_fake", "classic")
    assert dataclasses.replace(changed, schedule="reuse_fake") == args.hparams
    assert args.hparams.kernel_size == 4 and constants == {}
    assert settings == "--schedule classic"


def test_the_race_trains_the_recipe_that_the_readme_recommends():
    import race
    import train_gan
    recipe = race.RECIPE + race.RECIPE_PRECISION
    readme = (PROJECT / "README.md").read_text()
    assert f"train_gan.py {' '.join(recipe)} --max_minutes" in readme
    _, hyperparameters = train_gan.parse_flags(recipe)
    assert hyperparameters["precision"] == "auto" and hyperparameters["kernel_size"] == 4


@pytest.mark.parametrize("way", ["shifted_matmul_weight_gradient",
                                 "channels_first_patch_weight_gradient"])
def test_the_rewritten_weight_gradients_are_the_convolutions(way):
    """bench/ops_alone.py times them against oneDNN's: they must compute the
    same gradient, on a non-square image with odd channel counts."""
    import numpy as np
    import tensorflow as tf
    import ops_alone
    rng = np.random.default_rng(0)
    x = rng.standard_normal([2, 8, 6, 3], dtype=np.float32)
    dy = rng.standard_normal([2, 4, 3, 5], dtype=np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        expected, got = sess.run([
            tf.compat.v1.nn.conv2d_backprop_filter(x, [4, 4, 3, 5], dy, [1, 2, 2, 1], "SAME"),
            getattr(ops_alone, way)(tf.constant(x), tf.constant(dy))])
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_the_space_to_depth_first_layer_is_the_convolution():
    """bench/ops_alone.py times it against the convolution as trained: it
    must compute the same output and weight gradient."""
    import numpy as np
    import tensorflow as tf
    import ops_alone
    rng = np.random.default_rng(0)
    x = rng.standard_normal([2, 8, 6, 3], dtype=np.float32)
    w = rng.standard_normal([4, 4, 3, 5], dtype=np.float32)
    dy = rng.standard_normal([2, 4, 3, 5], dtype=np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        y, weight_gradient = ops_alone.space_to_depth_conv2d(tf.constant(x), tf.constant(w))
        got = sess.run([y, weight_gradient(tf.constant(dy))])
        expected = sess.run([
            tf.nn.conv2d(x, w, [1, 2, 2, 1], "SAME"),
            tf.compat.v1.nn.conv2d_backprop_filter(x, [4, 4, 3, 5], dy, [1, 2, 2, 1], "SAME")])
    for value, reference in zip(got, expected):
        assert np.abs(value - reference).max() <= 1e-5 * np.abs(reference).max()


def test_ops_alone_times_each_pair_it_is_asked_for(capsys):
    import ops_alone
    assert ops_alone.main(["--only", "batch_norm,weight_gradient,first_layer,depth_to_space",
                           "--batch_size", "2", "--rounds", "1", "--iters", "1",
                           "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine: ")
    timed = [line for line in lines if " ms (" in line]
    weights = len(ops_alone.WEIGHT_GRADIENTS)
    assert len(timed) == 1 + weights + 2 + len(ops_alone.DEPTH_TO_SPACE_SHAPES)
    weight_gradients = timed[1:1 + weights]
    first_layers, depth_to_spaces = timed[1 + weights:3 + weights], timed[3 + weights:]
    assert all(way in timed[0] for way in ("whole images", "rows of 4 pixels", "moments"))
    assert all(f"{way} " in line for line in weight_gradients
               for way in ops_alone.WEIGHT_GRADIENT_WAYS)
    assert all(line.startswith("D conv0") and "tf.nn.space_to_depth alone " in line
               for line in first_layers)
    assert all(line.startswith("depth_to_space of ") and "tf.nn.depth_to_space " in line
               for line in depth_to_spaces)


def test_ops_alone_times_the_patches_in_bf16(capsys):
    import ops_alone
    assert ops_alone.main(["--only", "patches", "--precision", "bf16", "--batch_size", "2",
                           "--rounds", "1", "--iters", "1", "--warmup", "0"]) == 0
    timed = [line for line in capsys.readouterr().out.splitlines() if " ms (" in line]
    assert len(timed) == 2 * len(ops_alone.PATCH_LAYERS)
    assert all(line.startswith("D conv3") and ", bf16: gather" in line for line in timed[::2])
    assert all(", bf16: gathers " in line and "gathers, zero taps padded " in line
               for line in timed[1::2])


@pytest.mark.parametrize("kernel_size", [4, 5])
def test_the_earlier_patches_and_overlap_adds_are_the_layers(kernel_size):
    """bench/ops_alone.py --only patches times the ways the patch matrix
    multiplies took before against layers.py's gathers: they must compute
    the same patches (in their own tap order) and the same overlap-add,
    the gathers from values with a zero tap padded on too."""
    import numpy as np
    import tensorflow as tf
    import layers
    import ops_alone
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        x = tf.constant(rng.standard_normal([2, 8, 6, 3], dtype=np.float32))
        w = tf.constant(rng.standard_normal([kernel_size, kernel_size, 3, 5], dtype=np.float32))
        taps = tf.constant(rng.standard_normal([2, 4, 3, kernel_size ** 2 * 3], dtype=np.float32))
        ours = layers._overlap_add(
            layers._with_zero_row(tf.reshape(taps, [-1, kernel_size ** 2 * 3])), 4, 3,
            kernel_size)
        pairs = [(ours, ops_alone.plane_overlap_add(taps, kernel_size)),
                 (ours, ops_alone.padded_overlap_add(taps, kernel_size))]
        if kernel_size == 4:
            # The same taps in the blocks' order: block_rows of their indices.
            block_order = tf.reshape(ops_alone.block_rows(tf.reshape(tf.range(48), [4, 4, 3, 1])),
                                     [-1])
            pairs += [(tf.matmul(layers._patches(x, 4), layers._patch_rows(w)),
                       tf.matmul(ops_alone.block_patches(x), ops_alone.block_rows(w))),
                      (ours, ops_alone.block_overlap_add(tf.gather(taps, block_order, axis=-1)))]
        for ours, theirs in sess.run(pairs):
            assert ours.shape == theirs.shape
            assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(ours).max()
