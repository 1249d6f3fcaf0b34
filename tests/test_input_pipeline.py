"""The preprocessed-image cache, parallel decoding and augmentation."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import generate_face as gf
from conftest import PROJECT, real_faces_or_skip


def quiet(*_):
    pass


@pytest.fixture
def faces(tmp_path, demo_dir):
    """A writable copy of the demo faces plus one corrupt file."""
    folder = tmp_path / "faces"
    shutil.copytree(demo_dir, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def load(folder, cache_dir, prep=gf.Preprocessing()):
    messages = []
    images, kept, skipped = gf.load_dataset(folder, prep, cache_dir, log=messages.append)
    return images, kept, skipped, "\n".join(messages)


def test_cache_is_reused_memory_mapped_and_identical(tmp_path, faces):
    cache = tmp_path / "cache"
    built, kept, skipped, log = load(faces, cache)
    assert "no cache yet" in log and "cached 40 images" in log
    again, kept_again, skipped_again, log = load(faces, cache)
    assert "using cached images" in log and "into the cache" not in log
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, built)
    assert kept_again == kept and len(kept) == 40
    # Skipped files stay counted and named when the cache is reused.
    assert skipped_again == skipped and skipped[0][0].endswith("broken.jpg")
    assert "skipped 1 of 41" in log
    fresh, fresh_kept, _ = gf.load_faces(gf.list_image_files(faces), log=quiet)
    np.testing.assert_array_equal(again, fresh)
    assert fresh_kept == kept_again


def test_cache_pixels_match_fresh_decode_on_real_jpegs(tmp_path):
    real = real_faces_or_skip()
    folder = tmp_path / "real"
    folder.mkdir()
    for path in gf.list_image_files(real)[:300]:
        shutil.copy(path, folder)
    cached, _, _, _ = load(folder, tmp_path / "cache")
    reused, _, _, _ = load(folder, tmp_path / "cache")
    fresh, _, _ = gf.load_faces(gf.list_image_files(folder), workers=1, log=quiet)
    one = gf.load_face(gf.list_image_files(folder)[123])
    np.testing.assert_array_equal(cached, fresh)
    np.testing.assert_array_equal(reused, fresh)
    np.testing.assert_array_equal(reused[123], one)


@pytest.mark.parametrize("change, reason", [
    ("add", "1 file(s) added"),
    ("remove", "1 removed"),
    ("modify", "1 modified"),
    ("crop", "crop_h 108 -> 100"),
])
def test_cache_rebuilds_and_says_why(tmp_path, faces, change, reason):
    cache = tmp_path / "cache"
    load(faces, cache)
    prep = gf.Preprocessing()
    if change == "add":
        shutil.copy(faces / "000001.jpg", faces / "extra.jpg")
    elif change == "remove":
        (faces / "000002.jpg").unlink()
    elif change == "modify":
        Image.new("RGB", (178, 218), (1, 2, 3)).save(faces / "000003.jpg")
    else:
        prep = gf.Preprocessing(crop_h=100)
    images, kept, _, log = load(faces, cache, prep)
    assert reason in log and "cached" in log
    fresh, fresh_kept, _ = gf.load_faces(gf.list_image_files(faces), prep, log=quiet)
    np.testing.assert_array_equal(images, fresh)
    assert kept == fresh_kept
    assert "using cached images" in load(faces, cache, prep)[3]


def test_interrupted_build_is_never_used(tmp_path, faces, monkeypatch):
    cache = tmp_path / "cache"
    real_decode = gf.decode_into

    def decode_then_die(paths, prep, out, workers=None, log=print):
        real_decode(paths[:10], prep, out, workers, log)
        raise KeyboardInterrupt

    monkeypatch.setattr(gf, "decode_into", decode_then_die)
    with pytest.raises(KeyboardInterrupt):
        load(faces, cache)
    monkeypatch.undo()
    assert not list(cache.glob("*.json"))  # no manifest: the half-built array is unusable
    images, kept, _, log = load(faces, cache)
    assert "no cache yet" in log and len(kept) == 40
    assert not list(cache.glob(".*.tmp*"))
    fresh, _, _ = gf.load_faces(gf.list_image_files(faces), log=quiet)
    np.testing.assert_array_equal(images, fresh)


def test_kill_during_cache_build_then_clean_rebuild(tmp_path):
    real = real_faces_or_skip()
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT / "generate_face.py"), "--build_cache",
         "--data_root", str(real), "--cache_dir", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.tmp*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not list(cache.glob("*.json")), "the build finished before it could be killed"
    images, kept, _, log = load(real, cache)
    assert "no cache yet" in log and len(kept) == len(gf.list_image_files(real))
    assert "using cached images" in load(real, cache)[3]
    np.testing.assert_array_equal(images[-5:], gf.load_faces(kept[-5:], log=quiet)[0])


def test_damaged_cache_files_are_rebuilt(tmp_path, faces):
    cache = tmp_path / "cache"
    load(faces, cache)
    (manifest,) = cache.glob("*.json")
    manifest.write_text("{half a manifest")
    assert "manifest is unreadable" in load(faces, cache)[3]
    (array,) = cache.glob("*.npy")
    array.write_bytes(array.read_bytes()[:1000])
    assert "missing or damaged" in load(faces, cache)[3]
    assert "using cached images" in load(faces, cache)[3]


def test_parallel_decoding_matches_serial(faces, monkeypatch):
    monkeypatch.setattr(gf, "DECODE_CHUNK", 7)  # several chunks across 2 workers
    files = gf.list_image_files(faces)
    parallel = gf.load_faces(files, workers=2, log=quiet)
    serial = gf.load_faces(files, workers=1, log=quiet)
    np.testing.assert_array_equal(parallel[0], serial[0])
    assert parallel[1:] == serial[1:]


def test_flip_mirrors_about_half_deterministically():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 4, 4, 3), dtype=np.uint8)
    original = images.copy()
    plain = gf.BatchStream(images, 16, seed=1)
    flipped = gf.BatchStream(images, 16, seed=1, flip=True)
    for _ in range(3):
        a, b = next(plain), next(flipped)
        mirrored = [not np.array_equal(x, y) for x, y in zip(a, b)]
        assert 2 <= sum(mirrored) <= 14
        for x, y, m in zip(a, b, mirrored):
            np.testing.assert_array_equal(y, x[:, ::-1] if m else x)
    resumed = gf.BatchStream(images, 16, seed=1, start_batch=2, flip=True)
    again = gf.BatchStream(images, 16, seed=1, flip=True)
    next(again), next(again)
    np.testing.assert_array_equal(next(resumed), next(again))
    np.testing.assert_array_equal(images, original)  # batches are copies


def test_a_cache_build_keeps_the_temporary_files_of_a_live_writer(tmp_path):
    """Two workers of one run may build the same cache at once: neither may
    delete the other's half-written file, only those of dead processes."""
    target = tmp_path / "faces.npy"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = tmp_path / f".faces.npy.tmp{finished.pid}"
    live = tmp_path / f".faces.npy.tmp{os.getppid()}"
    own = tmp_path / f".faces.npy.tmp{os.getpid()}"
    for path in (dead, live, own):
        path.write_bytes(b"")
    assert sorted(gf.leftovers_of(target)) == sorted([dead, own])


def test_the_training_input_runs_without_tf_data_autotuning():
    """Autotuning's model thread made Session.close wait 10-20 s at the end
    of every run; the pipeline has nothing for it to tune."""
    import tensorflow as tf
    from tensorflow.core.framework import dataset_options_pb2
    import training_graph
    from gan_model import HParams
    images = np.zeros((8, 64, 64, 3), np.uint8)
    with tf.Graph().as_default() as graph:
        iterator, start_batch = training_graph.build_input(images, HParams(batch_size=4))
        batch = iterator.get_next()
        options = [op for op in graph.get_operations() if op.type == "OptionsDataset"]
        assert len(options) == 1
        parsed = dataset_options_pb2.Options.FromString(
            options[0].get_attr("serialized_options"))
        assert parsed.autotune_options.HasField("enabled")
        assert parsed.autotune_options.enabled is False
        with tf.compat.v1.Session() as sess:
            sess.run(iterator.initializer, {start_batch: 0})
            assert sess.run(batch).shape == (4, 64, 64, 3)
