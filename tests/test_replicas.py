"""Data-parallel training: --devices on logical CPU devices in this process,
and two workers on 127.0.0.1 under TF_CONFIG in child processes."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import gan_run
import generate_face
import replicas
import train_gan
import training_graph
from conftest import PROJECT, run_flags
from gan_model import HParams

tf1 = tf.compat.v1


# ---------------------------------------------------------------------------
# Layouts: --devices and TF_CONFIG
# ---------------------------------------------------------------------------

def tf_config(workers, index):
    return {replicas.TF_CONFIG: json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}


def test_devices_pick_gpus_or_split_the_cpu():
    assert replicas.plan("auto", {}, gpus=0).devices == ("/cpu:0",)
    assert replicas.plan("auto", {}, gpus=0).logical_cpus == 0
    assert replicas.plan("auto", {}, gpus=3).devices == ("/gpu:0", "/gpu:1", "/gpu:2")
    assert replicas.plan(2, {}, gpus=3).devices == ("/gpu:0", "/gpu:1")
    split = replicas.plan(4, {}, gpus=0)
    assert split.devices == ("/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3")
    assert (split.logical_cpus, split.replicas, split.is_chief) == (4, 4, True)
    with pytest.raises(ValueError, match="more replicas than this machine's 2 GPUs"):
        replicas.plan(3, {}, gpus=2)


def test_tf_config_names_the_worker_and_its_share_of_the_run():
    layout = replicas.plan("auto", tf_config(["a:1", "b:2", "c:3"], 2), gpus=2)
    assert (layout.num_workers, layout.worker_index, layout.replicas) == (3, 2, 6)
    assert layout.first_replica == 4 and not layout.is_chief
    assert "worker 2 of 3" in layout.describe()
    # One worker is no cluster at all.
    assert replicas.plan("auto", tf_config(["a:1"], 0), gpus=0).cluster is None
    with pytest.raises(ValueError, match="one replica on its CPU"):
        replicas.plan(2, tf_config(["a:1", "b:2"], 0), gpus=0)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a JSON object"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"index": 0}}', "ps jobs"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task.index must be a worker number from 0 to 1"),
    ('{"cluster": {"worker": ["a"]}, "task": {"index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}',
     "task type must be"),
])
def test_bad_tf_config_is_explained(text, message):
    with pytest.raises(ValueError, match=message):
        replicas.read_cluster({replicas.TF_CONFIG: text})


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_devices_flag_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        train_gan.parse_flags(["--devices", value])
    assert "--devices" in capsys.readouterr().err


def test_each_worker_reads_its_own_rows_of_every_global_batch():
    """The workers' parts put together are the global batch, mirroring
    included, across epoch boundaries and from a resumed position."""
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    for start in (0, 7):
        whole = generate_face.BatchStream(images, 6, seed=3, start_batch=start, flip=True)
        parts = [generate_face.BatchStream(images, 6, seed=3, start_batch=start, flip=True,
                                           part=slice(3 * i, 3 * i + 3)) for i in range(2)]
        for _ in range(5):
            np.testing.assert_array_equal(np.concatenate([next(p) for p in parts]),
                                          next(whole))


# ---------------------------------------------------------------------------
# Two logical CPU devices, in this process
# ---------------------------------------------------------------------------

TWO_CPUS = replicas.Layout(("/cpu:0", "/cpu:1"), logical_cpus=2)


def session(parts):
    return tf1.Session(graph=parts.graph,
                       config=replicas.session_config(parts.layout, parts.strategy))


def tiny_hparams(**changes):
    return HParams(**{"gf_dim": 8, "df_dim": 8, "z_dim": 16, "batch_size": 4, **changes})


def test_replicas_run_on_two_devices_and_stay_identical():
    hparams = tiny_hparams(g_ema_decay=0.5)
    images = np.random.default_rng(0).integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    parts = training_graph.build(hparams, images, layout=TWO_CPUS)
    with session(parts) as sess:
        sess.run(parts.init)
        sess.run(parts.iterator.initializer, {parts.start_batch: 0})
        feed = {parts.z: np.random.default_rng(1).uniform(-1, 1, (8, 16))}
        metadata = tf1.RunMetadata()
        sess.run(parts.d_train_op, feed, run_metadata=metadata,
                 options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE))
        # Placement, not only results: with the logical devices lost, soft
        # placement would put both replicas on CPU:0 and everything would
        # still "work".
        convolutions = {stats.device[-5:] for stats in metadata.step_stats.dev_stats
                        for node in stats.node_stats if "Conv2D" in node.node_name}
        assert convolutions == {"CPU:0", "CPU:1"}
        for _ in range(3):
            for ops in training_graph.update_runs(parts, hparams.schedule):
                sess.run(ops, feed)
        mirrored = [v for v in parts.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                    if hasattr(v, "values")]
        names = {training_graph.variable_name(v) for v in mirrored}
        # Weights, batch-norm averages, G's EMA shadows and Adam's slots.
        assert {"discriminator/conv0/w", "generator/bn1/moving_mean",
                "generator_ema/deconv1/w", "global_step"} <= names
        assert any("d_adam" in name for name in names)
        for variable in mirrored:
            first, second = sess.run(list(variable.values))
            np.testing.assert_array_equal(first, second, err_msg=variable.name)
        assert sess.run(parts.global_step) == 3 + 1


@pytest.mark.parametrize("decay, write", [(0.5, "ResourceApplyGradientDescent"),
                                          (0.0, "AssignVariableOp")])
def test_each_replica_moves_its_own_ema_shadows_without_an_all_reduce(decay, write):
    """The copies of G are equal after each update, so are the moves of their
    shadows: averaging them over the replicas (assign_sub on a mirrored
    variable) would all-reduce a tensor the size of G on every step. The
    test above checks that the copies stay equal."""
    parts = training_graph.build(tiny_hparams(g_ema_decay=decay),
                                 np.zeros((8, 64, 64, 3), np.uint8), layout=TWO_CPUS)
    ema_ops = [op for op in parts.graph.get_operations()
               if "g_ema_update" in op.name and op.type != "NoOp"]
    crossings = [(op.name, tensor.name) for op in ema_ops for tensor in op.inputs
                 if op.device and tensor.op.device and tensor.op.device != op.device]
    assert not crossings
    moves = [op for op in ema_ops if op.type == write]
    assert {op.device[-5:] for op in moves} == {"CPU:0", "CPU:1"}
    assert len(moves) == 2 * len(parts.graph.get_collection(
        tf1.GraphKeys.GLOBAL_VARIABLES, "generator_ema"))


def test_two_replicas_take_the_step_of_one_device_on_their_joint_batch(tmp_path):
    """Both replicas get the same half batch, so that each one's batch norm
    sees the statistics of the joint batch. Adam's first moments (slots m)
    scale with the gradient, so they catch a sum of the replicas' gradients
    where the mean belongs (the weights alone would not: Adam's first step
    does not depend on the gradient's scale)."""
    hparams = tiny_hparams()
    face = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    images = np.repeat(face, 16, axis=0)
    z = np.tile(np.random.default_rng(1).uniform(-1, 1, (4, 16)), (2, 1))

    single = training_graph.build(
        tiny_hparams(batch_size=8), images, layout=replicas.Layout())
    with session(single) as sess:
        sess.run(single.init)
        start = single.saver.save(sess, str(tmp_path / "start"), write_meta_graph=False)
        sess.run(single.iterator.initializer, {single.start_batch: 0})
        for ops in training_graph.update_runs(single, hparams.schedule):
            sess.run(ops, {single.z: z})
        expected = {training_graph.variable_name(v): value for v, value in zip(
            single.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES),
            sess.run(single.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)))}

    mirrored = training_graph.build(hparams, images, layout=TWO_CPUS)
    with session(mirrored) as sess:
        mirrored.saver.restore(sess, start)  # the same starting weights
        sess.run(mirrored.iterator.initializer, {mirrored.start_batch: 0})
        for ops in training_graph.update_runs(mirrored, hparams.schedule):
            sess.run(ops, {mirrored.z: z})
        variables = mirrored.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
        got = {training_graph.variable_name(v): value
               for v, value in zip(variables, sess.run(variables))}
    assert got.keys() == expected.keys()
    slots = 0
    for name, value in expected.items():
        if "moving_variance" in name:
            continue  # tracks the unbiased batch variance: of 4 images, not of 8
        if name.endswith(("_adam", "_adam_1")):  # m and v: the gradient, its square
            slots += 1
            # 1%: batch statistics over 4 and over 8 rows round differently
            # (0.3% of the largest value with TensorFlow's Eigen kernels); a
            # sum of the replicas' gradients where the mean belongs is 100%.
            np.testing.assert_allclose(got[name], value, rtol=1e-2,
                                       atol=1e-2 * np.abs(value).max(), err_msg=name)
        else:
            # Adam's first step is lr * g / (|g| + epsilon), about lr * sign(g):
            # only where g is within rounding of 0 may its sign, and the
            # step, differ (by 2 lr). Replicas on other data would differ in
            # half of the weights.
            moved_otherwise = np.abs(got[name] - value) > hparams.learning_rate / 2
            assert moved_otherwise.mean() < 2e-3, (name, moved_otherwise.sum())
    assert slots >= 40


def test_two_replica_checkpoint_predicts_and_resumes_on_one_and_on_two(tmp_path, demo_dir):
    def train(max_steps, devices):
        flags = run_flags(tmp_path, demo_dir, max_steps, "--devices", devices,
                          tiny=max_steps == 2)
        lines = []
        result = train_gan.train(*train_gan.parse_flags(flags), log=lines.append)
        return result, "\n".join(lines)

    result, log = train(2, "2")
    assert result.step == 2 and "2 replicas: /cpu:0, /cpu:1" in log
    saved = gan_run.read_run_file(tmp_path / "ckpt")
    assert saved.replicas == 2 and saved.hparams.batch_size == 8
    with gan_run.Generator(tmp_path / "ckpt", log=lambda *_: None) as generator:
        faces = generator(np.zeros((2, 16), np.float32))
    assert faces.shape == (2, 64, 64, 3) and generator.step == 2

    result, log = train(3, "1")
    assert result.step == 3 and "replicas: 2 -> 1 (global batch 16 -> 8 images" in log
    result, log = train(4, "2")
    assert result.step == 4 and "replicas: 1 -> 2" in log
    assert gan_run.step_of(gan_run.latest_checkpoint(tmp_path / "ckpt")) == 4


def test_global_batch_larger_than_the_data_is_explained(tmp_path, demo_dir):
    flags = run_flags(tmp_path, demo_dir, 2, "--devices", "2", "--batch_size", "32")
    with pytest.raises(ValueError, match="one global batch of 64 .32 for each of 2 replicas"):
        train_gan.train(*train_gan.parse_flags(flags), log=lambda *_: None)


# ---------------------------------------------------------------------------
# Two workers on 127.0.0.1
# ---------------------------------------------------------------------------

class Worker:
    """A train_gan.py child process, its output collected line by line."""

    def __init__(self, flags, workers, index, cwd):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **tf_config(workers, index)}
        self.process = subprocess.Popen(
            [sys.executable, str(PROJECT / "train_gan.py"), *flags], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.seen = []
        self.reader = threading.Thread(
            target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True)
        self.reader.start()

    def wait_for(self, prefix, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.lines.get(timeout=1))
            except queue.Empty:
                continue
            if self.seen[-1].startswith(prefix):
                return self.seen[-1]
        raise AssertionError(f"no line starting {prefix!r}:\n{self.output}")

    def finish(self, timeout=180):
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=30)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.process.returncode

    @property
    def output(self):
        return "".join(self.seen)

    def digest(self):
        return next(line.split()[2] for line in self.seen if line.startswith("weights digest"))


def start_cluster(tmp_path, demo_dir, max_steps, *extra, other_folders=None, tiny=True):
    """Two workers; worker 1 gets `other_folders` for its run folders (to see
    whether it writes anything) or shares worker 0's, as machines sharing a
    file system do."""
    workers = replicas.loopback_workers(2)
    flags = run_flags(tmp_path, demo_dir, max_steps, "--worker_timeout", "20", *extra,
                      tiny=tiny)
    other = (run_flags(other_folders, demo_dir, max_steps, "--worker_timeout", "20", *extra,
                       "--cache_dir", str(tmp_path / "cache"), tiny=tiny)
             if other_folders else flags)
    return [Worker(flags, workers, 0, tmp_path), Worker(other, workers, 1, tmp_path)]


def test_two_workers_train_one_run_and_only_the_chief_writes(tmp_path, demo_dir):
    # With G's EMA on: each worker moves its own shadows (no all-reduce),
    # and the digest covers them.
    chief, other = start_cluster(tmp_path, demo_dir, 4, "--log_every", "1",
                                 "--g_ema_decay", "0.5", other_folders=tmp_path / "worker1")
    assert (chief.finish(), other.finish()) == (0, 0), chief.output + other.output
    assert gan_run.step_of(gan_run.latest_checkpoint(tmp_path / "ckpt")) == 4
    assert chief.digest() == other.digest()
    assert "worker 0 of 2 (chief): 1 of the run's 2 replicas" in chief.output
    assert "step 4/4  d_loss" in other.output
    assert not (tmp_path / "worker1").exists(), "worker 1 wrote into its run folders"
    assert gan_run.read_run_file(tmp_path / "ckpt").replicas == 2


def test_a_lost_worker_stops_the_other_and_a_restart_resumes(tmp_path, demo_dir):
    chief, other = start_cluster(tmp_path, demo_dir, 100000, "--log_every", "1",
                                 "--ckpt_every", "3")
    chief.wait_for("saved ")
    other.process.kill()
    killed = time.monotonic()
    assert chief.finish(timeout=150) == 1
    took = time.monotonic() - killed
    assert "worker 1 (127.0.0.1:" in chief.output and "stopped answering" in chief.output
    assert "Start the same command again on every machine" in chief.output
    assert took < 20 + 60, f"the chief took {took:.0f} s to notice"
    saved = gan_run.step_of(gan_run.latest_checkpoint(tmp_path / "ckpt"))

    chief, other = start_cluster(tmp_path, demo_dir, saved + 2, tiny=False)
    assert (chief.finish(), other.finish()) == (0, 0), chief.output + other.output
    assert f"resuming from {tmp_path / 'ckpt'}" in chief.output
    assert f"(step {saved})" in other.output
    assert chief.digest() == other.digest()


def test_sigint_on_the_chief_stops_both_with_a_checkpoint(tmp_path, demo_dir):
    chief, other = start_cluster(tmp_path, demo_dir, 100000, "--log_every", "1",
                                 "--ckpt_every", "100000")
    chief.wait_for("step 3/")
    chief.process.send_signal(signal.SIGINT)
    assert chief.finish() == 128 + signal.SIGINT, chief.output
    assert other.finish() == 0, other.output
    step = gan_run.step_of(gan_run.latest_checkpoint(tmp_path / "ckpt"))
    assert f"stopped by SIGINT at step {step}" in chief.output
    assert f"stopped at step {step}: another worker was interrupted" in other.output
    assert chief.digest() == other.digest()
