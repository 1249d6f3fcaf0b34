"""TensorBoard: what a run logs, read back with TensorBoard's own reader and server."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import train_gan
from conftest import run_flags

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def load(run_dir):
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
        event_accumulator.HISTOGRAMS: 0})
    events.Reload()
    return events


def steps(events, tag):
    return [event.step for event in events.Scalars(tag)]


def test_run_logs_scalars_histograms_images_and_graph(trained_run):
    events = load(trained_run / "logs" / "ckpt")
    tags = events.Tags()
    for tag in ("loss/d_loss", "loss/d_loss_real", "loss/d_loss_fake", "loss/g_loss",
                "D/D_x", "D/D_G_z", "train/learning_rate_d", "train/learning_rate_g",
                "perf/images_per_sec"):
        assert steps(events, tag) == [1, 2, 3], tag
    values = {tag: [e.value for e in events.Scalars(tag)] for tag in tags["scalars"]}
    assert all(0 < v < 1 for v in values["D/D_x"] + values["D/D_G_z"])
    assert all(v > 0 and np.isfinite(v) for v in values["loss/d_loss"] + values["loss/g_loss"])
    assert values["train/learning_rate_d"] == pytest.approx([2e-4] * 3)
    for tag in ("hist/z", "hist/D_x", "hist/D_G_z", "weights/generator/deconv1/w",
                "weights/discriminator/conv3/w"):
        assert tag in tags["histograms"], tag
    z_hist = events.Histograms("hist/z")[-1].histogram_value
    assert -1 <= z_hist.min and z_hist.max < 1
    (image,) = events.Images("samples/image/0")
    assert (image.step, image.width, image.height) == (3, 512, 512)
    assert tags["graph"]


def test_hparams_are_recorded_for_the_dashboard(trained_run):
    events = load(trained_run / "logs" / "ckpt")
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["learning_rate"].number_value == pytest.approx(2e-4)
    assert start.hparams["gf_dim"].number_value == 8
    assert start.hparams["precision"].string_value == "fp32"
    assert start.group_name == "ckpt"


def test_resumed_run_appends_without_duplicating_steps(tmp_path, demo_dir):
    flags = run_flags(tmp_path, demo_dir, 4, "--log_every", "1", "--ckpt_every", "2")
    assert train_gan.main(flags) == 0
    # As if the run had been killed at step 4, before checkpoint 4 was written:
    # steps 3 and 4 are in the logs but not in the newest checkpoint.
    ckpt = tmp_path / "ckpt"
    for path in ckpt.glob("gan.ckpt-4.*"):
        path.unlink()
    tf.compat.v1.train.update_checkpoint_state(str(ckpt), str(ckpt / "gan.ckpt-2"))
    resumed = run_flags(tmp_path, demo_dir, 5, "--log_every", "1", tiny=False)
    assert train_gan.main(resumed) == 0
    run_dir = tmp_path / "logs" / "ckpt"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # one folder, two writers
    assert steps(load(run_dir), "loss/d_loss") == [1, 2, 3, 4, 5]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_real_tensorboard_compares_two_runs(tmp_path, demo_dir):
    for name, rate in (("lr_2e-4", "2e-4"), ("lr_1e-3", "1e-3")):
        root = tmp_path / name
        flags = run_flags(root, demo_dir, 2, "--log_every", "1", "--learning_rate", rate,
                          "--log_dir", str(tmp_path / "logs"), "--run_name", name)
        assert train_gan.main(flags) == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "logs"),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
         "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    base = f"http://127.0.0.1:{port}/data"
    try:
        deadline = time.monotonic() + 90
        runs = []
        while time.monotonic() < deadline and set(runs) != {"lr_2e-4", "lr_1e-3"}:
            try:
                runs = fetch(f"{base}/runs")
            except OSError:
                pass
            time.sleep(0.5)
        assert set(runs) == {"lr_2e-4", "lr_1e-3"}, runs
        scalar_tags = fetch(f"{base}/plugin/scalars/tags")
        for run in runs:
            assert {"loss/d_loss", "loss/g_loss", "D/D_x"} <= set(scalar_tags[run])
        assert "samples/image/0" in fetch(f"{base}/plugin/images/tags")["lr_1e-3"]
        experiment = fetch(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        rates = next(info for info in experiment["hparamInfos"]
                     if info["name"] == "learning_rate")
        assert rates["differs"] is True
        assert (rates["domainInterval"]["minValue"], rates["domainInterval"]["maxValue"]) \
            == pytest.approx((2e-4, 1e-3))
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"loss/d_loss", "loss/g_loss"} <= metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
