"""gan_run.py: the run file (hparams.json) and the generator every script draws with."""

import json

import numpy as np
import pytest
import tensorflow as tf

import gan_run
from gan_model import HParams

tf1 = tf.compat.v1


def test_the_run_file_keeps_hyperparameters_and_records_apart(tmp_path):
    hparams = HParams(gf_dim=16, learning_rate=1e-3, is_crop=False)
    gan_run.write_run_file(tmp_path, hparams, replicas=3)
    saved = json.loads((tmp_path / gan_run.HPARAMS_FILE).read_text())
    assert set(saved) == {"hparams", "records"} and saved["records"] == {"replicas": 3}
    assert gan_run.read_run_file(tmp_path) == gan_run.RunFile(hparams, 3)


def test_a_run_file_of_the_older_flat_layout_still_reads(tmp_path):
    hparams = HParams(gf_dim=16)
    (tmp_path / gan_run.HPARAMS_FILE).write_text(json.dumps({**hparams.to_dict(),
                                                             "replicas": 2}))
    assert gan_run.read_run_file(tmp_path) == gan_run.RunFile(hparams, 2)


@pytest.mark.parametrize("content, error", [
    ("{not json", ValueError),
    (json.dumps({"hparams": {"gf_dim": "16"}}), ValueError),
    (json.dumps({"hparams": {"gf_dim": 16, "colour": "blue"}}), ValueError),
    (json.dumps({"hparams": {}, "records": {"replicas": 0}}), ValueError),
    (json.dumps([1, 2]), ValueError),
])
def test_a_damaged_run_file_is_refused(tmp_path, content, error):
    (tmp_path / gan_run.HPARAMS_FILE).write_text(content)
    with pytest.raises(error):
        gan_run.read_run_file(tmp_path)


def test_a_missing_run_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        gan_run.read_run_file(tmp_path)


@pytest.mark.parametrize("decay, use_ema, expected", [
    (0.999, True, True), (0.999, False, False), (0.0, True, False)])
def test_the_generator_draws_with_the_average_only_where_the_run_keeps_one(decay, use_ema,
                                                                           expected):
    hparams = HParams(gf_dim=8, df_dim=8, z_dim=4, g_ema_decay=decay)
    with tf.Graph().as_default() as graph:
        net = gan_run.GeneratorNet(hparams, use_ema=use_ema)
        assert net.uses_ema == expected
        read = {v.name.split("/")[0] for v in graph.get_collection(
            tf1.GraphKeys.GLOBAL_VARIABLES)}
        assert read == ({"generator", "generator_ema"} if expected else {"generator"})
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            faces = sess.run(net.images_uint8, {net.z: np.zeros((3, 4), np.float32)})
    assert faces.shape == (3, 64, 64, 3) and faces.dtype == np.uint8
