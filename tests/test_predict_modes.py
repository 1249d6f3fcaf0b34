"""predict_gan.py's other modes: interpolation, arithmetic, completion, export."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import complete_face
import gan_run
import generate_face
import predict_gan


def pixels(path):
    return np.asarray(Image.open(path), np.int32)


def cell(grid, index, cols, size=64):
    row, col = divmod(index, cols)
    return grid[row * size:(row + 1) * size, col * size:(col + 1) * size]


@pytest.fixture(scope="module")
def run(drawing_run):
    ckpt = drawing_run / "ckpt"
    return ckpt, gan_run.latest_checkpoint(ckpt), gan_run.read_run_file(ckpt).hparams


def single_face(tmp_path, ckpt, seed):
    out = tmp_path / f"seed{seed}.png"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--num", "1", "--seed", str(seed),
                             "--out", str(out)]) == 0
    return pixels(out)


def test_slerp_keeps_its_ends_and_the_length_between_them():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, 100), rng.uniform(-1, 1, 100)
    np.testing.assert_array_equal(predict_gan.slerp(a, b, 0.0), a)
    np.testing.assert_allclose(predict_gan.slerp(a, b, 1.0), b, atol=1e-12)
    # Between ends of the same length: on the sphere, at equal angles to
    # both, unlike the straight line's midpoint, which is shorter.
    b = b * np.linalg.norm(a) / np.linalg.norm(b)
    middle = predict_gan.slerp(a, b, 0.5)
    cos = [np.dot(middle, v) / np.linalg.norm(middle) / np.linalg.norm(v) for v in (a, b)]
    assert cos[0] == pytest.approx(cos[1], rel=1e-9)
    assert np.linalg.norm(middle) == pytest.approx(np.linalg.norm(a), rel=1e-9)
    assert np.linalg.norm((a + b) / 2) < 0.9 * np.linalg.norm(a)
    np.testing.assert_allclose(predict_gan.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: a line


def test_interpolation_ends_are_the_seeds_faces(tmp_path, run):
    ckpt, _, _ = run
    out, gif = tmp_path / "walk.png", tmp_path / "walk.gif"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--interpolate", "3,17,42",
                             "--steps", "5", "--out", str(out), "--gif", str(gif)]) == 0
    grid = pixels(out)
    assert grid.shape == (2 * 64, 5 * 64, 3)  # rows = pairs, columns = steps
    for index, seed in ((0, 3), (4, 17), (5, 17), (9, 42)):
        assert np.abs(cell(grid, index, 5) - single_face(tmp_path, ckpt, seed)).max() <= 1
    assert np.abs(cell(grid, 2, 5) - cell(grid, 0, 5)).mean() > 1  # it moves
    with Image.open(gif) as animation:
        # 3 points, 5 steps a pair: 9 distinct faces there, 7 on the way back.
        assert (animation.n_frames, animation.size) == (16, (64, 64))


def test_saved_z_redraws_its_faces_and_arithmetic_adds_them(tmp_path, run):
    ckpt, _, hparams = run
    grid_path, z_path = tmp_path / "grid.png", tmp_path / "z.npy"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--num", "16", "--save_z", str(z_path),
                             "--out", str(grid_path)]) == 0
    z = np.load(z_path)
    np.testing.assert_array_equal(z, generate_face.sample_grid_z(0, 16, hparams.z_dim))
    grid = pixels(grid_path)
    # A single term reproduces its cell; the result is the last face of the row.
    out = tmp_path / "one.png"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--arithmetic", "5", "--z_file",
                             str(z_path), "--out", str(out)]) == 0
    row = pixels(out)
    assert row.shape == (64, 128, 3)
    assert np.abs(cell(row, 1, 2) - cell(grid, 5, 4)).max() <= 1
    # Three terms: their averages' faces, then the result.
    with gan_run.Generator(ckpt) as generator:
        _, result = predict_gan.arithmetic(generator, "3,7 - 12,5 + 2", str(z_path),
                                           tmp_path / "sum.png")
    np.testing.assert_allclose(result, (z[3] + z[7]) / 2 - (z[12] + z[5]) / 2 + z[2],
                               atol=1e-6)
    assert pixels(tmp_path / "sum.png").shape == (64, 4 * 64, 3)


@pytest.mark.parametrize("expression, message", [
    ("3,,7", "cannot read"), ("3 + - 2", "cannot read"), ("3 7", "cannot read"),
    ("", "empty"), ("3 - 99", "out of range")])
def test_an_unreadable_or_out_of_range_expression_is_refused(tmp_path, run, capsys, expression, message):
    ckpt, _, hparams = run
    z_path = tmp_path / "z.npy"
    np.save(z_path, generate_face.sample_grid_z(0, 16, hparams.z_dim))
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--arithmetic", expression,
                             "--z_file", str(z_path), "--out", str(tmp_path / "x.png")]) == 1
    assert message in capsys.readouterr().err


def test_arithmetic_needs_a_z_file_of_this_model(tmp_path, run, capsys):
    ckpt = str(run[0])
    assert predict_gan.main(["--ckpt_dir", ckpt, "--arithmetic", "1 + 2"]) == 1
    assert "--save_z" in capsys.readouterr().err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 7), np.float32))
    assert predict_gan.main(["--ckpt_dir", ckpt, "--arithmetic", "1", "--z_file",
                             str(wrong)]) == 1
    assert "[4, 7]" in capsys.readouterr().err


def test_truncation_scales_z(tmp_path, run):
    ckpt, _, _ = run
    for t in ("1", "0.5"):
        assert predict_gan.main(["--ckpt_dir", str(ckpt), "--num", "4", "--truncation", t,
                                 "--save_z", str(tmp_path / f"z{t}.npy"),
                                 "--out", str(tmp_path / f"t{t}.png")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "z0.5.npy"), 0.5 * np.load(tmp_path / "z1.npy"))
    assert np.abs(pixels(tmp_path / "t0.5.png") - pixels(tmp_path / "t1.png")).mean() > 0.5
    with pytest.raises(SystemExit):
        predict_gan.main(["--ckpt_dir", str(ckpt), "--truncation", "0"])


@pytest.mark.parametrize("kind", complete_face.MASK_KINDS)
def test_each_mask_hides_what_it_says(kind):
    mask = complete_face.make_mask(kind, 64, 64, seed=1)
    hole = mask == 0
    expected = np.zeros((64, 64), bool)
    region = {"center": (slice(16, 48), slice(16, 48)), "left": (slice(None), slice(0, 32)),
              "right": (slice(None), slice(32, 64)), "top": (slice(0, 32), slice(None)),
              "bottom": (slice(32, 64), slice(None))}
    if kind == "random":
        assert 0.75 < hole.mean() < 0.85
        assert not np.array_equal(hole, complete_face.make_mask(kind, 64, 64, seed=2) == 0)
    else:
        expected[region[kind]] = True
        np.testing.assert_array_equal(hole, expected)


def test_context_weights_favour_the_hole_border():
    mask = complete_face.make_mask("center", 64, 64)
    weights = complete_face.context_weights(mask)
    assert weights[mask == 0].max() == 0  # the hole itself is not compared
    assert weights[15, 32] > weights[13, 32] > 0  # nearer the hole counts more
    assert weights[0, 0] == 0  # far from the hole


def test_poisson_blend_keeps_known_pixels_and_removes_an_offset():
    rng = np.random.default_rng(0)
    known = rng.uniform(-0.5, 0.5, (16, 16, 3)).astype(np.float32)
    mask = complete_face.make_mask("center", 16, 16)
    # The same picture a little brighter: its gradients are the photo's own,
    # so blending gives back the photo, seam-free.
    blended = complete_face.poisson_blend(known, known + 0.3, mask)
    np.testing.assert_array_equal(blended[mask == 1], known[mask == 1])
    np.testing.assert_allclose(blended, known, atol=1e-5)


def test_completion_fits_the_known_pixels_and_leaves_them_untouched(tmp_path, run,
                                                                    demo_dir):
    _, checkpoint, hparams = run
    paths = generate_face.list_image_files(demo_dir)[:3]
    known = complete_face.load_images_to_complete(paths, hparams)
    mask = complete_face.make_mask("center", 64, 64)
    for blend in ("poisson", "none"):
        result = complete_face.complete(checkpoint, hparams, known, mask, iterations=40,
                                      blend=blend, log=lambda *_: None)
        kept = mask == 1
        np.testing.assert_array_equal(result["blended"][:, kept], known[:, kept])
        # Adam on z lowers the loss it minimises; by how much depends on how
        # much this tiny model's faces vary with z, which is not a property
        # of the code, so only the direction is asserted, at three points.
        loss = result["contextual_loss"]
        assert len(loss) == 41 and loss[-1] < loss[20] < loss[0]
    assert np.all(result["masked"][:, mask == 0] == 0)
    np.testing.assert_array_equal(result["blended"][:, mask == 0],
                                  result["generated"][:, mask == 0])  # blend none: pasted


def test_complete_command_writes_rows_of_four(tmp_path, run, demo_dir):
    ckpt, _, _ = run
    paths = [str(p) for p in generate_face.list_image_files(demo_dir)[:2]]
    out = tmp_path / "done.png"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--complete", *paths, "--mask", "left",
                             "--iterations", "5", "--out", str(out)]) == 0
    grid = pixels(out)
    assert grid.shape == (2 * 64, 4 * 64, 3)
    original = generate_face.load_face(paths[1])
    np.testing.assert_array_equal(cell(grid, 7, 4), original)  # last column: the photo
    np.testing.assert_array_equal(cell(grid, 6, 4)[:, 32:], original[:, 32:])


def test_completion_takes_folders_of_photos(run, demo_dir):
    _, _, hparams = run
    one = generate_face.list_image_files(demo_dir)[0]
    known = complete_face.load_images_to_complete([str(demo_dir), one], hparams)
    assert known.shape == (41, 64, 64, 3)
    np.testing.assert_array_equal(known[0], known[40])  # the folder's first, then `one`


def test_completion_refuses_missing_corrupt_or_mismatched_inputs(tmp_path, run, demo_dir, capsys):
    ckpt = str(run[0])
    face = str(generate_face.list_image_files(demo_dir)[0])
    small = tmp_path / "small.png"
    Image.new("L", (32, 32), 0).save(small)
    full = tmp_path / "full.png"
    Image.new("L", (64, 64), 255).save(full)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a JPEG")
    cases = [([str(tmp_path / "missing.jpg")], "center", "missing.jpg not found"),
             ([face, str(corrupt)], "center", "corrupt.jpg: cannot decode"),
             ([face], str(small), "must be 64x64"),
             ([face], str(full), "has no hole"),
             ([face], "diagonal", "neither a file nor one of")]
    for images, mask, message in cases:
        assert predict_gan.main(["--ckpt_dir", ckpt, "--complete", *images,
                                 "--mask", mask, "--out", str(tmp_path / "x.png")]) == 1
        assert message in capsys.readouterr().err


EXPORT_CHECK = """
import sys
import numpy as np
import tensorflow as tf
assert not any("predict_gan" in name for name in sys.modules)
model = tf.saved_model.load(sys.argv[1])
z = np.load(sys.argv[2])
images = model.signatures["serving_default"](z=tf.constant(z))
np.save(sys.argv[3], images["images"].numpy())
constants = {k: v.numpy().item() for k, v in model.signatures["preprocessing"]().items()}
print(sorted(constants.items()))
"""


def test_exported_savedmodel_runs_without_the_repository(tmp_path, run):
    ckpt, checkpoint, hparams = run
    export = tmp_path / "export"
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--export_savedmodel",
                             str(export)]) == 0
    assert (export / "saved_model.pb").is_file()
    z = generate_face.sample_grid_z(5, 7, hparams.z_dim)  # any batch size
    np.save(tmp_path / "z.npy", z)
    script = tmp_path / "check.py"
    script.write_text(EXPORT_CHECK)
    # A fresh interpreter in another folder: nothing of this project importable.
    done = subprocess.run([sys.executable, str(script), str(export), str(tmp_path / "z.npy"),
                           str(tmp_path / "out.npy")], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "('crop_h', 108)" in done.stdout and f"('z_dim', {hparams.z_dim})" in done.stdout
    exported = np.load(tmp_path / "out.npy")
    with gan_run.Generator(checkpoint=checkpoint) as generator:
        np.testing.assert_allclose(exported, generator(z), atol=1e-5)
    # The folder is never overwritten.
    assert predict_gan.main(["--ckpt_dir", str(ckpt), "--export_savedmodel",
                             str(export)]) == 1


@pytest.mark.parametrize("script", ["predict_gan", "evaluate_gan"])
def test_readme_documents_every_flag(script):
    import importlib
    from conftest import PROJECT
    readme = (PROJECT / "README.md").read_text()
    parser = importlib.import_module(script).build_parser()
    flags = [flag for action in parser._actions for flag in action.option_strings
             if flag.startswith("--") and flag != "--help"]
    # The flag itself, not a longer one it begins (`--num` in `--num_images`).
    documented = [flag for flag in flags
                  if re.search(rf"`{re.escape(flag)}(?![A-Za-z0-9_])", readme)]
    assert flags and documented == flags


@pytest.mark.parametrize("flags, message", [
    (["--steps", "5"], "--steps applies to --interpolate only"),
    (["--interpolate", "1,2", "--num", "4"], "--num applies to sampling (no mode flag) only"),
    (["--arithmetic", "1", "--mask", "left"], "--mask applies to --complete only"),
    (["--export_savedmodel", "x", "--out", "y.png"], "--out applies to sampling"),
    (["--complete", "a.jpg", "--z_file", "z.npy"], "--z_file applies to --interpolate and"),
])
def test_an_option_of_another_mode_is_refused_not_ignored(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_gan.main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
