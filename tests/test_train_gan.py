"""The training program: outputs, resume, flags, errors, interruption."""

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
from PIL import Image

import gan_run
import run_outputs
import train_gan
import training_monitor
from conftest import PROJECT, copy_run_with_hparams, run_flags

tf1 = tf.compat.v1


def test_three_step_run_writes_checkpoint_summaries_and_grid(trained_run):
    ckpt = trained_run / "ckpt"
    assert gan_run.latest_checkpoint(ckpt) == str(ckpt / "gan.ckpt-3")
    assert (ckpt / "gan.ckpt-3.index").is_file()
    assert gan_run.read_run_file(ckpt).hparams.gf_dim == 8
    stored = dict(tf.train.list_variables(str(ckpt / "gan.ckpt-3")))
    assert stored["generator/deconv1/w"] == [5, 5, 32, 64]
    assert "global_step" in stored and "sample_z" in stored

    assert list((trained_run / "logs" / "ckpt").glob("events.out.tfevents.*"))

    grid = Image.open(trained_run / "samples" / "train_000003.png")
    assert grid.size == (512, 512) and grid.mode == "RGB"


def test_resume_continues_step_adam_state_and_sample_z(tmp_path, demo_dir):
    flags = run_flags(tmp_path, demo_dir, 2, "--keep_checkpoints", "2", "--ckpt_every", "1")
    assert train_gan.main(flags) == 0
    first = dict(tf.train.list_variables(str(tmp_path / "ckpt" / "gan.ckpt-2")))
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "gan.ckpt-2"))
    sample_z = reader.get_tensor("sample_z")
    assert np.abs(reader.get_tensor("generator/deconv1/w/g_adam")).max() > 0

    log = []
    result = train_gan.train(*train_gan.parse_flags(
        [*flags[:flags.index("--max_steps")], "--max_steps", "5",
         "--keep_checkpoints", "2", "--ckpt_every", "1"]), log=log.append)
    assert result.step == 5
    assert any("resuming from" in line and "gan.ckpt-2" in line for line in log)
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "gan.ckpt-5"))
    assert reader.get_tensor("global_step") == 5
    # Adam's bias-correction counter starts at beta1 and is multiplied by it
    # at each update: 5 updates since the start give beta1^6; an optimizer
    # rebuilt from scratch on resume would stand at beta1^4.
    powers = [name for name in first if name.startswith("beta1_power")]
    assert len(powers) == 2
    for name in powers:
        assert reader.get_tensor(name) == pytest.approx(0.5 ** 6)
    np.testing.assert_array_equal(reader.get_tensor("sample_z"), sample_z)
    # keep_checkpoints prunes across resumes too.
    kept = sorted(p.name for p in (tmp_path / "ckpt").glob("*.index"))
    assert kept == ["gan.ckpt-4.index", "gan.ckpt-5.index"]
    assert len(list((tmp_path / "samples").glob("train_*.png"))) == 2  # end of each run


def test_resume_refuses_other_architecture(tmp_path, trained_run, demo_dir):
    flags = run_flags(trained_run, demo_dir, 5) + ["--gf_dim", "16", "--z_dim", "20"]
    expected = r"--z_dim 20 \(checkpoint has 16\), --gf_dim 16 \(checkpoint has 8\)"
    with pytest.raises(ValueError, match=expected):
        train_gan.train(*train_gan.parse_flags(flags), log=lambda *_: None)
    assert gan_run.latest_checkpoint(trained_run / "ckpt").endswith("gan.ckpt-3")


def test_checkpoint_with_wrong_hparams_file_is_named(tmp_path, trained_run, demo_dir):
    copy_run_with_hparams(trained_run, tmp_path, df_dim=12)
    flags = run_flags(tmp_path, demo_dir, 5, tiny=False)
    expected = "gan.ckpt-3 does not fit this architecture.*discriminator"
    with pytest.raises(ValueError, match=expected):
        train_gan.train(*train_gan.parse_flags(flags), log=lambda *_: None)


@pytest.mark.parametrize("flags, message", [
    (["--max_steps", "-1"], "--max_steps must be 0 or more"),
    (["--max_minutes", "-1"], "--max_minutes must be 0 (no limit) or a positive"),
    (["--max_minutes", "nan"], "--max_minutes must be 0 (no limit) or a positive"),
    (["--precision", "fp16"], "--precision must be one of auto, fp32, bf16"),
    (["--output_h", "50"], "--output_h must be a positive multiple of 16"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--is_crop", "maybe"], "expected true or false"),
    (["--learning_rate", "fast"], "invalid float value"),
    (["--no_such_flag", "1"], "unrecognized arguments"),
    # A shortened flag is a typo too, not --max_steps: argparse would
    # otherwise take any unambiguous prefix.
    (["--max_step", "5"], "unrecognized arguments: --max_step"),
])
def test_bad_flags_fail_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_gan.parse_flags(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# The classic DCGAN defaults (../shared/DESIGN.md), written out here rather
# than read from the dataclass the flags are generated from.
CLASSIC_DEFAULTS = {
    "crop_h": 108, "crop_w": 108, "is_crop": True, "output_h": 64, "output_w": 64,
    "z_dim": 100, "gf_dim": 64, "df_dim": 64, "init_stddev": 0.02, "bn_epsilon": 1e-5,
    "bn_momentum": 0.9, "lrelu_slope": 0.2, "batch_size": 64, "learning_rate": 2e-4,
    "beta1": 0.5, "real_label": 1.0, "g_steps": 1,
}


def test_classic_defaults_are_the_flags_defaults():
    run, given = train_gan.parse_flags([])
    assert given == {}  # nothing typed: a fresh run takes the defaults
    hparams = gan_run.resolve_hparams("no such folder", given)[0]
    for name, value in CLASSIC_DEFAULTS.items():
        assert getattr(hparams, name) == value, name
    parsed = train_gan.parse_flags(["--z_dim", "7", "--flip", "--beta1", "0.3"])[1]
    assert parsed == {"z_dim": 7, "flip": True, "beta1": 0.3}
    assert (run.ckpt_dir, run.max_steps, run.max_minutes) == ("ckpt", 20000, 0.0)


def test_an_empty_folder_or_too_few_faces_stop_before_any_checkpoint(tmp_path, demo_dir, capsys):
    (tmp_path / "empty").mkdir()
    assert train_gan.main(run_flags(tmp_path, tmp_path / "empty", 1)) == 1
    assert "no images in" in capsys.readouterr().err
    assert train_gan.main(run_flags(tmp_path, demo_dir, 1, "--batch_size", "64")) == 1
    assert "only 40 usable images" in capsys.readouterr().err
    assert gan_run.latest_checkpoint(tmp_path / "ckpt") is None


def test_sigint_saves_a_checkpoint_that_resumes(tmp_path, demo_dir):
    flags = run_flags(tmp_path, demo_dir, 100000, "--log_every", "1", "--ckpt_every", "100000")
    process = subprocess.Popen([sys.executable, str(PROJECT / "train_gan.py"), *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    # Read in a thread, so that the deadline holds even if the child prints nothing.
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                              daemon=True)
    reader.start()
    seen, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until training is under way
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if seen[-1].startswith("step 3/"):
            break
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=30)  # the child's output ends with it: drain the rest
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert process.returncode == 128 + signal.SIGINT, output
    assert "SIGINT received" in output and "run the same command again to resume" in output
    checkpoint = gan_run.latest_checkpoint(tmp_path / "ckpt")
    assert checkpoint is not None, output
    step = gan_run.step_of(checkpoint)
    assert step >= 3
    reader = tf.train.load_checkpoint(checkpoint)
    assert reader.get_tensor("global_step") == step

    resumed = run_flags(tmp_path, demo_dir, step + 1, tiny=False)
    result = train_gan.train(*train_gan.parse_flags(resumed), log=lambda *_: None)
    assert result.step == step + 1


def test_readme_documents_every_training_flag():
    readme = (PROJECT / "README.md").read_text()
    for action in train_gan.build_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}`" in readme, f"{flag} is missing from README.md"


def test_precision_may_change_on_resume_and_bf16_checkpoints_predict(tmp_path, demo_dir):
    import predict_gan
    assert train_gan.main(run_flags(tmp_path, demo_dir, 2, "--precision", "bf16")) == 0
    log = []
    result = train_gan.train(*train_gan.parse_flags(
        run_flags(tmp_path, demo_dir, 3, "--precision", "fp32")), log=log.append)
    assert result.step == 3 and "  precision: bf16 -> fp32" in log
    # The change is remembered: a plain resume keeps fp32.
    assert gan_run.read_run_file(tmp_path / "ckpt").hparams.precision == "fp32"
    out = tmp_path / "face.png"
    assert predict_gan.main(["--ckpt_dir", str(tmp_path / "ckpt"), "--num", "2",
                             "--out", str(out)]) == 0
    assert Image.open(out).size == (128, 64)


def test_auto_precision_is_resolved_logged_and_saved(tmp_path, demo_dir):
    import hardware
    log = []
    result = train_gan.train(*train_gan.parse_flags(
        run_flags(tmp_path, demo_dir, 1, "--precision", "auto")), log=log.append)
    expected, reason, _ = hardware.resolve_precision("auto")
    assert result.step == 1 and f"precision {expected} ({reason})" in log
    saved = gan_run.read_run_file(tmp_path / "ckpt").hparams
    assert saved.precision == expected  # what ran, so a resume rebuilds the same


def test_max_minutes_stops_cleanly_with_a_checkpoint_and_a_grid_and_resumes(
        tmp_path, demo_dir):
    # A limit shorter than the setup: the command still trains one step, so
    # that it leaves a checkpoint behind.
    flags = run_flags(tmp_path, demo_dir, 1000, "--max_minutes", "0.0001")
    log = []
    result = train_gan.train(*train_gan.parse_flags(flags), log=log.append)
    assert (result.step, result.out_of_time, result.stopped_by) == (1, True, None)
    assert gan_run.step_of(result.checkpoint) == 1
    assert (tmp_path / "samples" / "train_000001.png").is_file()
    assert "--max_minutes 0.0001 reached at step 1; run the same command again" in log[-1]
    assert train_gan.main(flags) == 0  # a clean finish, and the same command resumes
    assert gan_run.step_of(gan_run.latest_checkpoint(tmp_path / "ckpt")) == 2


def test_max_minutes_bounds_the_time_of_a_long_run(tmp_path, demo_dir):
    started = time.monotonic()
    result = train_gan.train(*train_gan.parse_flags(run_flags(
        tmp_path, demo_dir, 10 ** 6, "--max_minutes", "0.1")), log=lambda *_: None)
    # 6 s of budget; the last step, the checkpoint and the grid come after it.
    assert result.out_of_time and 1 < result.step < 10 ** 6
    assert time.monotonic() - started < 6 + 30
    assert gan_run.step_of(result.checkpoint) == result.step


@pytest.fixture
def two_checkpoints(tmp_path, demo_dir):
    """A run with checkpoints at steps 1 and 2; returns its checkpoint folder."""
    assert train_gan.main(run_flags(tmp_path, demo_dir, 2, "--ckpt_every", "1")) == 0
    return tmp_path / "ckpt"


def resume_to(tmp_path, demo_dir, max_steps):
    log = []
    result = train_gan.train(*train_gan.parse_flags(
        run_flags(tmp_path, demo_dir, max_steps, tiny=False)), log=log.append)
    return result, "\n".join(log)


def test_index_naming_a_deleted_checkpoint_resumes_from_the_previous(
        tmp_path, demo_dir, two_checkpoints):
    for path in two_checkpoints.glob("gan.ckpt-2.*"):
        path.unlink()  # the `checkpoint` index file still names step 2
    assert tf.compat.v1.train.latest_checkpoint(str(two_checkpoints)) is None
    result, log = resume_to(tmp_path, demo_dir, 3)
    assert "resuming from" in log and "gan.ckpt-1 (step 1)" in log
    assert result.step == 3


def test_truncated_newest_checkpoint_is_skipped_and_reported(tmp_path, demo_dir, two_checkpoints):
    (data,) = two_checkpoints.glob("gan.ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:1000])
    result, log = resume_to(tmp_path, demo_dir, 3)
    assert "skipping damaged checkpoint" in log and "gan.ckpt-2" in log
    assert "resumed from" in log and "gan.ckpt-1 instead" in log
    assert result.step == 3


def test_no_loadable_checkpoint_is_an_error_that_keeps_the_files(
        tmp_path, demo_dir, two_checkpoints, capsys):
    for data in two_checkpoints.glob("gan.ckpt-*.data-*"):
        data.write_bytes(b"")
    before = sorted(p.name for p in two_checkpoints.iterdir())
    assert train_gan.main(run_flags(tmp_path, demo_dir, 3, tiny=False)) == 1
    assert "no checkpoint in" in capsys.readouterr().err
    assert sorted(p.name for p in two_checkpoints.iterdir()) == before


def test_predict_restores_as_training_does(tmp_path, demo_dir, two_checkpoints, capsys):
    """One restore policy: from a folder, the newest checkpoint that loads, the
    damaged one named; a checkpoint asked for by name is used or refused."""
    import predict_gan
    (data,) = two_checkpoints.glob("gan.ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:1000])
    out = tmp_path / "face.png"
    assert predict_gan.main(["--ckpt_dir", str(two_checkpoints), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipping damaged checkpoint" in captured.err and "gan.ckpt-2" in captured.err
    assert "gan.ckpt-1" in captured.out and out.is_file()
    out.unlink()
    assert predict_gan.main(["--checkpoint", str(two_checkpoints / "gan.ckpt-2"),
                             "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gan.ckpt-2 cannot be read" in err and "--checkpoint" in err
    assert not out.exists()


def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_one(tmp_path, demo_dir):
    # Data order, flips and z are functions of (seed, step) and the checkpoint
    # holds weights, Adam state and batch-norm statistics, so stopping after
    # step 2 and resuming must give the same steps 3 and 4.
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = ("--flip", "true", "--log_every", "1")
    assert train_gan.main(run_flags(straight, demo_dir, 4, *extra)) == 0
    assert train_gan.main(run_flags(split, demo_dir, 2, *extra)) == 0
    assert train_gan.main(run_flags(split, demo_dir, 4, *extra)) == 0
    a = tf.train.load_checkpoint(str(straight / "ckpt" / "gan.ckpt-4"))
    b = tf.train.load_checkpoint(str(split / "ckpt" / "gan.ckpt-4"))
    names = a.get_variable_to_shape_map()
    assert names == b.get_variable_to_shape_map()
    for name in names:
        np.testing.assert_allclose(a.get_tensor(name), b.get_tensor(name), rtol=1e-4,
                                   atol=1e-6, err_msg=name)


def test_unwritable_output_folder_fails_before_any_work(tmp_path, demo_dir, capsys):
    (tmp_path / "samples").write_text("a file where the folder should be")
    assert train_gan.main(run_flags(tmp_path, demo_dir, 3)) == 1
    err = capsys.readouterr().err
    assert "--samples_dir" in err and "is a file, not a folder" in err
    assert gan_run.latest_checkpoint(tmp_path / "ckpt") is None


def test_a_sample_grid_that_cannot_be_written_does_not_stop_training(
        tmp_path, demo_dir, monkeypatch):
    def refuse(images, path):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(train_gan.generate_face, "save_grid", refuse)
    log = []
    result = train_gan.train(*train_gan.parse_flags(run_flags(tmp_path, demo_dir, 3)),
                             log=log.append)
    assert result.step == 3 and result.checkpoint.endswith("gan.ckpt-3")
    assert any("warning: could not write" in line for line in log)


def test_failed_checkpoint_write_names_the_folder_and_keeps_the_last_one(
        tmp_path, demo_dir, monkeypatch):
    real_save, calls = tf.compat.v1.train.Saver.save, []

    def save_then_fill_the_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_save(self, *args, **kwargs)
    monkeypatch.setattr(tf.compat.v1.train.Saver, "save", save_then_fill_the_disk)
    flags = run_flags(tmp_path, demo_dir, 3, "--ckpt_every", "1")
    with pytest.raises(run_outputs.OutputError, match="could not write a checkpoint to .*ckpt "
                                                     "at step 2.*gan.ckpt-1.*is intact"):
        train_gan.train(*train_gan.parse_flags(flags), log=lambda *_: None)
    monkeypatch.undo()
    assert gan_run.latest_checkpoint(tmp_path / "ckpt").endswith("gan.ckpt-1")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "gan.ckpt-1"))
    assert reader.get_tensor("global_step") == 1


class CountingSession:
    """A Session that counts its runs and the generator's forward convolutions
    they execute."""

    def __init__(self, sess):
        self.sess, self.runs, self.g_forwards = sess, 0, 0

    def run(self, fetches, feed_dict=None, options=None):
        self.runs += 1
        metadata = tf1.RunMetadata()
        fetched = self.sess.run(fetches, feed_dict, tf1.RunOptions(
            trace_level=tf1.RunOptions.FULL_TRACE), metadata)
        self.g_forwards += sum(
            1 for device in metadata.step_stats.dev_stats for node in device.node_stats
            if node.node_name.startswith("generator/deconv2/")
            and "Conv2DBackpropInput" in node.timeline_label
            and "gradients" not in node.node_name)
        return fetched


@pytest.mark.parametrize("schedule, runs", [("reuse_fake", 1), ("classic", 2)])
def test_the_default_iteration_computes_g_once_in_one_run(schedule, runs):
    import replicas
    import training_graph
    from gan_model import HParams
    hparams = HParams(gf_dim=8, df_dim=8, z_dim=16, batch_size=4, schedule=schedule)
    assert HParams().schedule == "reuse_fake"
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), np.uint8)
    training = training_graph.build(hparams, images)
    with tf1.Session(graph=training.graph) as sess:
        sess.run(training.init)
        sess.run(training.iterator.initializer, {training.start_batch: 0})
        counting = CountingSession(sess)
        fetched = train_gan.train_step(counting, training, hparams, 0, False,
                                       replicas.OneWorker(training.layout), False)
    assert (counting.runs, counting.g_forwards) == (runs, runs)
    assert fetched["weights_finite"] and np.isfinite(fetched["g_loss"])


def test_two_g_steps_update_g_twice_and_grids_draw_with_the_average(tmp_path, demo_dir):
    import predict_gan
    flags = run_flags(tmp_path, demo_dir, 20, "--schedule", "classic", "--g_steps", "2",
                      "--g_ema_decay", "0.9", "--sample_every", "20")
    assert train_gan.main(flags) == 0
    checkpoint = str(tmp_path / "ckpt" / "gan.ckpt-20")
    # Adam's beta1 power counts each optimizer's updates: 20 for D, 40 for G.
    assert tf.train.load_variable(checkpoint, "beta1_power") == pytest.approx(0.5 ** 21)
    assert tf.train.load_variable(checkpoint, "beta1_power_1") == pytest.approx(0.5 ** 41)
    # The training grid is drawn with the averaged weights, as predictions are.
    grid = np.asarray(Image.open(tmp_path / "samples" / "train_000020.png"), np.int32)
    paths = {}
    for ema in (True, False):
        paths[ema] = tmp_path / f"ema_{ema}.png"
        assert predict_gan.main(["--ckpt_dir", str(tmp_path / "ckpt"), "--use_ema", str(ema),
                                 "--out", str(paths[ema])]) == 0
    averaged, trained = (np.asarray(Image.open(paths[ema]), np.int32) for ema in (True, False))
    assert np.abs(averaged - grid).max() <= 1
    assert np.abs(trained - grid).max() > 1


@pytest.mark.parametrize("poison, expected", [
    ({}, True), ({(0, 5): np.nan}, False), ({(1, 0): np.inf}, False),
    ({(0, 0): -np.inf}, False),
    ({(0, 1): np.inf, (1, 2): -np.inf}, False),  # the sums' infinities cancel to NaN
    ({(0, 2): 1e30, (1, 3): -1e30}, True),       # large, finite
])
def test_the_weights_check_fails_on_any_nan_or_infinity(poison, expected):
    import training_graph
    values = [np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
              np.random.default_rng(1).normal(size=(7,)).astype(np.float32)]
    for (which, index), value in poison.items():
        values[which].reshape(-1)[index] = value
    with tf.Graph().as_default():
        variables = [tf1.get_variable(f"v{i}", initializer=v) for i, v in enumerate(values)]
        check = training_graph.all_finite(variables)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            assert sess.run(check) == expected


def poison_z_once(monkeypatch, at_step):
    """Make the z batch of `at_step` NaN the first time it is asked for."""
    real_train_z, poisoned = train_gan.generate_face.train_z, []

    def train_z(seed, step, batch_size, z_dim):
        z = real_train_z(seed, step, batch_size, z_dim)
        if step + 1 == at_step and not poisoned:
            poisoned.append(step)
            z[:] = np.nan
        return z
    monkeypatch.setattr(train_gan.generate_face, "train_z", train_z)


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(
        tmp_path, demo_dir, monkeypatch, capsys):
    poison_z_once(monkeypatch, at_step=3)
    flags = run_flags(tmp_path, demo_dir, 5, "--ckpt_every", "2", "--log_every", "3")
    assert train_gan.main(flags) == 1
    err = capsys.readouterr().err
    assert "diverged at step 3" in err and "gan.ckpt-2" in err and "--nan_rollbacks" in err
    assert gan_run.latest_checkpoint(tmp_path / "ckpt").endswith("gan.ckpt-2")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "gan.ckpt-2"))
    assert np.isfinite(reader.get_tensor("generator/deconv1/w")).all()


def test_nan_rollback_resumes_from_the_last_checkpoint_with_halved_rates(
        tmp_path, demo_dir, monkeypatch):
    poison_z_once(monkeypatch, at_step=3)
    log = []
    flags = run_flags(tmp_path, demo_dir, 5, "--ckpt_every", "2", "--nan_rollbacks", "1",
                      "--d_learning_rate", "4e-4")
    result = train_gan.train(*train_gan.parse_flags(flags), log=log.append)
    assert result.step == 5
    text = "\n".join(log)
    assert "diverged at step 3" in text
    assert "rollback 1 of 1: resuming from" in text and "gan.ckpt-2" in text
    assert "resuming from" in text and "(step 2)" in text
    saved = gan_run.read_run_file(tmp_path / "ckpt").hparams
    assert (saved.learning_rate, saved.d_learning_rate) == (1e-4, 2e-4)


def test_the_watchdog_warns_once_per_streak_after_its_first_window():
    watchdog = training_monitor.CollapseWatchdog(window=10, real_diversity=0.6)
    # Inside the first window nothing counts; then 10 low steps make one warning.
    assert not any(watchdog.observe_d_loss(step, 0.001) for step in range(1, 11))
    warnings = [watchdog.observe_d_loss(step, 0.001) for step in range(11, 40)]
    assert [i for i, w in enumerate(warnings) if w] == [9] and "below 0.05" in warnings[9]
    # A healthy step ends the streak; a new streak may warn again.
    assert watchdog.observe_d_loss(40, 0.7) is None
    assert any(watchdog.observe_d_loss(step, 0.001) for step in range(41, 51))
    ratio, warning = watchdog.observe_samples(11, 0.6)
    assert ratio == pytest.approx(1.0) and warning is None
    results = [watchdog.observe_samples(step, 0.06) for step in range(12, 30, 2)]
    assert results[0][0] == pytest.approx(0.1)
    assert [bool(w) for _, w in results] == [False] * 5 + [True] + [False] * 3  # at step 22


def test_collapsed_samples_are_reported_in_the_log_and_tensorboard(tmp_path, demo_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = []
    # A freshly initialised G draws the same grey picture for every z.
    flags = run_flags(tmp_path, demo_dir, 12, "--collapse_window", "4", "--log_every", "1")
    train_gan.train(*train_gan.parse_flags(flags), log=log.append)
    assert any("possible mode collapse at step 8" in line for line in log)
    events = EventAccumulator(str(tmp_path / "logs" / "ckpt"))
    events.Reload()
    diversity = events.Scalars("watchdog/sample_diversity")
    assert [e.step for e in diversity] == list(range(1, 13))
    assert all(0 <= e.value < 0.5 for e in diversity)
