"""predict_gan.py: pictures from a checkpoint, and the errors instead of pictures."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_run
import predict_gan
from conftest import PROJECT, copy_run_with_hparams


def draw(ckpt_dir=None, checkpoint=None, out=None, **options):
    """predict_gan.predict with a generator loaded for the call."""
    with gan_run.Generator(ckpt_dir, checkpoint) as generator:
        return predict_gan.predict(generator, out=out, **options), generator.checkpoint


@pytest.mark.parametrize("num, size", [(1, (64, 64)), (64, (512, 512))])
def test_writes_png_of_the_right_size(tmp_path, drawing_run, num, size):
    out = tmp_path / "face.png"
    assert predict_gan.main(["--ckpt_dir", str(drawing_run / "ckpt"), "--num", str(num),
                             "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", size)
        pixels = np.asarray(image)
    assert pixels.std() > 2  # drawn, not a constant field (rounding noise alone is < 1)


def test_prediction_redraws_the_runs_last_training_grid(tmp_path, drawing_run):
    # Same checkpoint, same z (the run's seed is 0), inference mode in both:
    # the graph rebuilt from hparams.json must reproduce the training grid.
    out, _ = draw(drawing_run / "ckpt", num=64, seed=0, out=tmp_path / "g.png")
    trained = np.asarray(Image.open(drawing_run / "samples" / "train_000200.png"), np.int32)
    predicted = np.asarray(Image.open(out), np.int32)
    assert np.abs(predicted - trained).max() <= 1  # rounding at most


def test_seed_decides_the_faces(tmp_path, drawing_run):
    paths = {}
    with gan_run.Generator(drawing_run / "ckpt") as generator:  # loaded once, used thrice
        for name, seed in (("a", 1), ("b", 1), ("c", 2)):
            paths[name] = predict_gan.predict(generator, num=4, seed=seed,
                                              out=tmp_path / f"{name}.png")
    a, b, c = (np.asarray(Image.open(paths[k]), np.int32) for k in "abc")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5


def test_a_named_checkpoint_prefix_or_folder_is_used(tmp_path, drawing_run):
    prefix = str(drawing_run / "ckpt" / "gan.ckpt-200")
    out, used = draw(checkpoint=prefix, num=1, out=tmp_path / "x.png")
    assert used == prefix and out.is_file()
    _, used = draw(checkpoint=str(drawing_run / "ckpt"), num=1, out=tmp_path / "y.png")
    assert used == prefix


def test_missing_checkpoint_says_train_first_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "face.png"
    assert predict_gan.main(["--ckpt_dir", str(tmp_path / "none"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "train first" in err and "python train_gan.py" in err
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="not found"):
        draw(checkpoint=str(tmp_path / "gan.ckpt-9"), out=out)
    assert not out.exists()


def test_architecture_mismatch_is_refused(tmp_path, drawing_run, capsys):
    ckpt = copy_run_with_hparams(drawing_run, tmp_path, gf_dim=16)
    out = tmp_path / "face.png"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "does not fit this architecture" in err and "generator/" in err
    assert not out.exists()


def test_bad_num_is_a_flag_error(capsys):
    with pytest.raises(SystemExit):
        predict_gan.main(["--num", "0"])
    assert "--num must be at least 1" in capsys.readouterr().err


def test_a_shortened_flag_is_refused(capsys):
    with pytest.raises(SystemExit):
        predict_gan.main(["--ckpt", "ckpt"])
    assert "unrecognized arguments: --ckpt" in capsys.readouterr().err


def test_the_script_as_a_user_runs_it(tmp_path, drawing_run):
    """A fresh interpreter, eager execution on as in a user's shell: the in-process
    tests share one interpreter, whose TensorFlow settings may differ."""
    out = tmp_path / "face.png"
    done = subprocess.run([sys.executable, str(PROJECT / "predict_gan.py"), "--ckpt_dir",
                           str(drawing_run / "ckpt"), "--num", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    assert "gan.ckpt-200" in done.stdout and Image.open(out).size == (128, 128)
