"""metrics.py and evaluate_gan.py: SWD, FID and KID maths, diversity, the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
from PIL import Image

import evaluate_gan
import generate_face
import inception
import metrics
from conftest import real_faces_or_skip



@pytest.fixture(scope="module")
def faces(demo_dir):
    """The 40 demo faces, preprocessed as training does: uint8 [40, 64, 64, 3]."""
    images, _, _ = generate_face.load_faces(generate_face.list_image_files(demo_dir),
                                            log=lambda *_: None)
    return images


def blurred(images):
    return scipy.ndimage.uniform_filter(images.astype(np.float32), size=(1, 3, 3, 1)).round(
        ).astype(np.uint8)


def noisy(images, amount=20):
    noise = np.random.default_rng(0).normal(0, amount, images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


def reference_pyramid(image, levels):
    """One channel's Laplacian pyramid written out directly: a 2D 5x5 binomial
    kernel (not the separable filter the code uses), every second pixel kept;
    zeros between pixels and the kernel x 4 on the way up."""
    row = np.array([1, 4, 6, 4, 1]) / 16.0
    kernel = np.outer(row, row)
    pyramid, current = [], image.astype(np.float64)
    for _ in range(levels - 1):
        smaller = scipy.ndimage.convolve(current, kernel, mode="mirror")[::2, ::2]
        spread = np.zeros_like(current)
        spread[::2, ::2] = smaller
        pyramid.append(current - scipy.ndimage.convolve(spread, 4 * kernel, mode="mirror"))
        current = smaller
    return pyramid + [current]


def test_pyramid_levels_match_a_direct_reference(faces):
    pyramid = metrics.laplacian_pyramid(faces[:2], 3)
    assert [level.shape[1:3] for level in pyramid] == [(64, 64), (32, 32), (16, 16)]
    for image in range(2):
        for channel in range(3):
            expected = reference_pyramid(faces[image, ..., channel], 3)
            for got, want in zip(pyramid, expected):
                np.testing.assert_allclose(got[image, ..., channel], want, atol=1e-3)
    assert metrics.pyramid_resolutions(128, 128) == [128, 64, 32, 16]
    assert metrics.pyramid_resolutions(64, 48) == [48, 24]


def test_identical_sets_are_at_distance_zero(faces):
    result = metrics.swd(faces, faces.copy(), seed=3)
    assert set(result) == {"64", "32", "16", "avg"}
    assert all(value < 1e-6 for value in result.values())


def test_blur_and_noise_are_far_and_affect_the_fine_levels_most(faces):
    clean_vs_noisy = metrics.swd(faces, noisy(faces))
    clean_vs_blurred = metrics.swd(faces, blurred(faces))
    for result in (clean_vs_noisy, clean_vs_blurred):
        assert result["avg"] > 10
        assert result["64"] > 3 * result["16"]  # fine detail is what changed
    # More noise, more distance.
    assert metrics.swd(faces, noisy(faces, 40))["64"] > clean_vs_noisy["64"]


def test_same_seed_same_numbers_other_seed_close(faces):
    a = metrics.swd(faces, noisy(faces), seed=5)
    b = metrics.swd(faces, noisy(faces), seed=5)
    c = metrics.swd(faces, noisy(faces), seed=6)
    assert a == b
    assert a != c and abs(a["avg"] - c["avg"]) < 0.2 * a["avg"]


def test_sets_of_different_sizes_are_refused(faces):
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.swd(faces[:10], faces[:12])


def test_floor_uses_disjoint_halves():
    real = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    compared, (a, b) = metrics.split_real(real, 3)
    assert len(compared) == 3 and len(a) == len(b) == 3
    assert not set(a[:, 0, 0, 0]) & set(b[:, 0, 0, 0])
    _, (a, b) = metrics.split_real(real[:4], 3)  # too few: half each
    assert len(a) == len(b) == 2 and not set(a[:, 0, 0, 0]) & set(b[:, 0, 0, 0])


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=4), rng.normal(size=4)
    var_a, var_b = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    # Diagonal covariances commute: FID = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = metrics.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-9)
    # A rotated pair shares the answer, through the full matrix square root.
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    got = metrics.frechet_distance(rotation @ mean_a, rotation @ np.diag(var_a) @ rotation.T,
                                        rotation @ mean_b, rotation @ np.diag(var_b) @ rotation.T)
    assert got == pytest.approx(expected, rel=1e-6)
    # From samples, through feature_statistics.
    samples_a = rng.normal(mean_a, np.sqrt(var_a), (200000, 4))
    samples_b = rng.normal(mean_b, np.sqrt(var_b), (200000, 4))
    got = metrics.frechet_distance(*metrics.feature_statistics(samples_a),
                                        *metrics.feature_statistics(samples_b))
    assert got == pytest.approx(expected, abs=0.05)


def test_frechet_distance_agrees_with_the_general_matrix_square_root():
    """On full-rank covariances, where scipy.linalg.sqrtm of S_a S_b is accurate."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 20)), rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    (mean_a, cov_a), (mean_b, cov_b) = metrics.feature_statistics(a), metrics.feature_statistics(b)
    root = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    direct = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
              - 2 * np.trace(root))
    assert metrics.frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(direct,
                                                                                 rel=1e-9)
    # Fewer samples than dimensions: singular covariances stay finite and >= 0.
    few = metrics.fid_of_features(rng.normal(size=(10, 50)), rng.normal(size=(12, 50)))
    assert np.isfinite(few) and few > 0


def naive_kid(a, b):
    """The unbiased MMD^2 of one pair of sets, written out pair by pair."""
    kernel = lambda x, y: (x @ y / len(x) + 1) ** 3  # noqa: E731
    m = len(a)
    within = sum(kernel(a[i], a[j]) + kernel(b[i], b[j])
                 for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(kernel(a[i], b[j]) for i in range(m) for j in range(m)) / m ** 2


def test_kid_is_the_unbiased_mmd_averaged_over_subsets(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(8, 5)), rng.normal(0.5, 1, size=(8, 5))
    # Subsets of the whole sets: every subset is the same, the spread is 0.
    monkeypatch.setattr(metrics, "kid_subset_size", lambda n, m: 8)
    mean, std = metrics.kernel_inception_distance(a, b, subsets=3)
    assert mean == pytest.approx(naive_kid(a, b), rel=1e-9) and std == pytest.approx(0)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(3)
    real, same = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    near = rng.normal(0.3, 1, size=(600, 16))
    far = rng.normal(0.6, 1, size=(600, 16))
    same_kid, same_std = metrics.kernel_inception_distance(real, same, seed=0)
    near_kid, near_std = metrics.kernel_inception_distance(real, near, seed=0)
    far_kid, _ = metrics.kernel_inception_distance(real, far, seed=0)
    # Unbiased: one distribution scores within its own spread of 0.
    assert abs(same_kid) < 3 * same_std
    assert near_kid > same_kid + 3 * near_std and far_kid > 2 * near_kid
    assert metrics.kernel_inception_distance(real, near, seed=0) == (near_kid, near_std)
    assert metrics.kernel_inception_distance(real, near, seed=1) != (near_kid, near_std)


def test_diversity_flags_a_collapsed_set(faces):
    assert metrics.diversity(np.repeat(faces[:1], 20, axis=0)) < 1e-6
    assert metrics.diversity(faces) > 0.2
    collapsed = noisy(np.repeat(faces[:1], 40, axis=0), 5)  # one face, a little noise
    result = metrics.evaluate(collapsed, faces, log=lambda *_: None)
    assert result["diversity"]["collapse_warning"]
    assert not metrics.evaluate(noisy(faces), faces,
                                     log=lambda *_: None)["diversity"]["collapse_warning"]


def test_the_scorer_reports_the_diversity_ratio_that_evaluate_reports(faces):
    # Training's evaluation and the race score with FaceScorer: a collapse
    # must show there as it does in evaluate_gan.py.
    scorer = metrics.FaceScorer(faces[:20])
    collapsed = noisy(np.repeat(faces[:1], 40, axis=0), 5)
    varied = noisy(faces[20:])
    for fake in (collapsed, varied):
        expected = metrics.evaluate(fake, faces[:20], log=lambda *_: None)["diversity"]
        assert scorer(fake)["diversity"] == pytest.approx(expected["ratio"], rel=1e-9)
    assert scorer(collapsed)["diversity"] < metrics.COLLAPSE_RATIO < scorer(varied)["diversity"]
    assert 0.5 < scorer.floor()["diversity"] < 2


def evaluate_json(capsys, *flags):
    assert evaluate_gan.main([*flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


CLI_FLAGS = ["--num_images", "20", "--seed", "1"]


def test_cli_json_on_a_checkpoint_is_complete_and_deterministic(capsys, drawing_run, demo_dir):
    flags = ["--ckpt_dir", str(drawing_run / "ckpt"), "--real_dir", str(demo_dir), *CLI_FLAGS]
    first, again = evaluate_json(capsys, *flags), evaluate_json(capsys, *flags)
    assert first == again  # deterministic for a seed
    assert (first["num_images"], first["real_vs_real_images"], first["step"]) == (20, 20, 200)
    assert set(first["swd"]) == set(first["real_vs_real"]) == {"64", "32", "16", "avg"}
    for name in ("fid", "kid", "kid_std", "fid_real_vs_real", "kid_real_vs_real",
                 "kid_std_real_vs_real"):
        assert np.isfinite(first[name]), name
    assert first["fid"] > 0 and first["kid_std"] > 0 and first["inception_standard"]
    assert (first["generated_images"], first["real_images"]) == (20, 20)


def test_training_lowers_swd_by_more_than_the_seeds_spread(capsys, trained_run, drawing_run,
                                                           demo_dir):
    """200 steps beat 3 by more than the metric's own spread between two seeds
    (measured here, not a figure from one machine), and real faces beat both."""
    real = ["--real_dir", str(demo_dir), "--num_images", "20", "--fid", "false"]
    early = evaluate_json(capsys, "--ckpt_dir", str(trained_run / "ckpt"), *real, "--seed", "1")
    late, other_seed = (evaluate_json(capsys, "--ckpt_dir", str(drawing_run / "ckpt"), *real,
                                      "--seed", seed) for seed in ("1", "2"))
    spread = abs(other_seed["swd"]["avg"] - late["swd"]["avg"])
    assert early["swd"]["avg"] - late["swd"]["avg"] > spread
    assert late["real_vs_real"]["avg"] < late["swd"]["avg"]


def test_cli_table_names_what_it_compared(capsys, drawing_run, demo_dir):
    assert evaluate_gan.main(["--ckpt_dir", str(drawing_run / "ckpt"), "--real_dir",
                              str(demo_dir), *CLI_FLAGS]) == 0
    table = capsys.readouterr().out
    assert "SWD x1e3 (20 vs 20)" in table and "real vs real" in table
    assert "FID " in table and "KID x1e3 " in table and "[20 vs 20; real vs real 20 vs 20]" in table


def saved_faces(run_root, folder, count):
    """(folder, faces): `count` faces of a run's checkpoint, saved as PNG files."""
    import gan_run
    with gan_run.Generator(run_root / "ckpt") as generator:
        fakes = metrics.generate_faces(generator, count, 0)
    folder.mkdir()
    for i, face in enumerate(fakes):
        generate_face.atomic_save_image(face, folder / f"fake_{i:03d}.png")
    return folder, fakes


def test_a_folder_of_saved_faces_scores_as_its_checkpoint(capsys, tmp_path, drawing_run,
                                                          demo_dir):
    folder, _ = saved_faces(drawing_run, tmp_path / "fakes", 20)
    flags = ["--real_dir", str(demo_dir), "--num_images", "20", "--fid", "false"]
    from_folder = evaluate_json(capsys, "--fake_dir", str(folder), *flags)
    from_checkpoint = evaluate_json(capsys, "--ckpt_dir", str(drawing_run / "ckpt"), *flags)
    assert from_folder["swd"] == from_checkpoint["swd"]
    assert from_folder["fake_dir"] == str(folder)


def test_a_missing_run_folder_or_archive_is_an_error_that_names_it(capsys, tmp_path, demo_dir):
    assert evaluate_gan.main(["--ckpt_dir", str(tmp_path / "none"),
                              "--real_dir", str(demo_dir)]) == 1
    assert "train first" in capsys.readouterr().err
    assert evaluate_gan.main(["--fake_dir", str(demo_dir), "--real_dir", str(tmp_path)]) == 1
    assert "no images" in capsys.readouterr().err
    assert evaluate_gan.main(["--fake_dir", str(demo_dir), "--real_dir", str(demo_dir),
                              "--inception_archive", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_gan.main(["--real_dir", str(demo_dir), "--num_images", "1"])


def test_real_faces_halves_are_near_each_other():
    real = generate_face.sample_faces(real_faces_or_skip(), generate_face.Preprocessing(), 400,
                                      generate_face.run_rng(0, metrics.STREAM_PICK_REAL),
                                  lambda *_: None)
    result = metrics.evaluate(real[200:], real[:200], log=lambda *_: None)
    blurred_result = metrics.evaluate(blurred(real[200:]), real[:200],
                                           log=lambda *_: None)
    assert result["swd"]["avg"] < 2 * result["real_vs_real"]["avg"]
    assert blurred_result["swd"]["64"] > 3 * result["swd"]["64"]


@pytest.mark.parametrize("flags, message", [
    ([], "--real_dir is required"),
    (["--real_dir", "r", "--fake_dir", "f", "--checkpoint", "c"],
     "--checkpoint applies to faces from a checkpoint"),
    (["--real_dir", "r", "--crop_h", "90"], "--crop_h applies to --fake_dir only"),
    (["--real_dir", "r", "--fake_dir", "f", "--crop_w", "0"], "--crop_w must be at least 1"),
])
def test_flags_of_the_other_side_and_bad_values_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_gan.main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_without_the_inception_package_swd_is_still_given_with_the_install_command(
        capsys, monkeypatch, demo_dir, drawing_run):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    result = evaluate_json(capsys, "--ckpt_dir", str(drawing_run / "ckpt"), "--real_dir",
                           str(demo_dir), "--num_images", "10")
    assert result["fid"] is None and result["kid"] is None
    assert inception.INSTALL_COMMAND in result["fid_unavailable"]
    assert result["swd"]["avg"] >= 0


def test_two_folders_as_their_files_are_score_as_fid_helper_does(capsys, tmp_path, demo_dir,
                                                                 drawing_run):
    """--preprocess_real false: every file of both folders, uncropped, each
    resized straight to 299x299 by the network; SWD is left out for the
    two sizes."""
    folder, fakes = saved_faces(drawing_run, tmp_path / "fakes", 12)
    reals = [Path(p) for p in generate_face.list_image_files(demo_dir)[:16]]
    real_dir = tmp_path / "reals"
    real_dir.mkdir()
    for path in reals:
        (real_dir / path.name).symlink_to(path)
    result = evaluate_json(capsys, "--fake_dir", str(folder), "--real_dir", str(real_dir),
                           "--preprocess_real", "false", "--num_images", "100")
    assert result["swd"] is None and "one size" in result["swd_unavailable"]
    assert (result["generated_images"], result["real_images"]) == (12, 16)
    raw_reals = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in reals])
    assert raw_reals.shape[1:] == (218, 178, 3)  # CelebA's size, not the 64x64 training size
    with inception.InceptionFeatures() as features:
        direct = metrics.fid_of_features(features(fakes), features(raw_reals))
    assert result["fid"] == pytest.approx(direct, rel=1e-6)
