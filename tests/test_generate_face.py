"""The data layer: listing, crop/resize, bad files, batches, z, grids, demo data."""

import numpy as np
import pytest
from PIL import Image

import demo_faces
import generate_face as gf
from conftest import real_faces_or_skip


def save(path, mode="RGB", size=(178, 218), colour=(200, 30, 40), **options):
    Image.new(mode, size, colour).save(path, **options)
    return path


def test_listing_is_recursive_case_insensitive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["b/2.JPG", "a.png", "c.jpeg", "b/1.jpg"]:
        save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.replace(str(tmp_path) + "/", "") for p in gf.list_image_files(tmp_path)]
    assert found == ["a.png", "b/1.jpg", "b/2.JPG", "c.jpeg"]


def test_missing_and_empty_folders_name_folder_and_extensions(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*--data_root"):
        gf.list_image_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    looked_for = r"\*\.jpg, \*\.jpeg, \*\.png"
    with pytest.raises(FileNotFoundError, match=r"no images in .*empty.*" + looked_for):
        gf.list_image_files(tmp_path / "empty")


def test_centre_crop_takes_the_celeba_window(tmp_path):
    # Red inside the 108x108 window at (35, 55), blue outside: a crop that is
    # off by a few pixels or resizes the whole frame lets blue in.
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[:] = (0, 0, 255)
    pixels[55:163, 35:143] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "window.png")
    face = gf.load_face(tmp_path / "window.png")
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    assert face[..., 0].min() >= 250 and face[..., 2].max() <= 5

    whole = gf.load_face(tmp_path / "window.png", gf.Preprocessing(is_crop=False))
    assert whole[..., 2].max() > 200  # without the crop the border shows


def test_crop_box_matches_design():
    assert gf.crop_box(178, 218, 108, 108) == (35, 55, 143, 163)


def test_modes_become_rgb(tmp_path):
    cases = {
        "gray.png": Image.new("L", (178, 218), 128),
        "rgba.png": Image.new("RGBA", (178, 218), (10, 200, 30, 255)),
        "palette.png": Image.new("RGB", (178, 218), (10, 200, 30)).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (178, 218), (0, 0, 0, 0)),
    }
    expected = {"gray.png": (128, 128, 128), "rgba.png": (10, 200, 30),
                "palette.png": (10, 200, 30), "cmyk.jpg": (255, 255, 255)}
    for name, image in cases.items():
        image.save(tmp_path / name)
        face = gf.load_face(tmp_path / name)
        assert face.shape == (64, 64, 3), name
        np.testing.assert_allclose(face.reshape(-1, 3).mean(0), expected[name], atol=3,
                                   err_msg=name)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 178, dtype=np.uint16)[None, :].repeat(218, axis=0)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    face = gf.load_face(tmp_path / "deep.png").astype(int)
    assert face.shape == (64, 64, 3)
    # The crop spans source columns 35-142 of a 0-255 ramp: a dark-to-bright
    # gradient, not a white field.
    assert 45 <= face[:, 0].mean() <= 60 and 195 <= face[:, -1].mean() <= 210


def test_bad_files_are_skipped_counted_and_named(tmp_path):
    good = [save(tmp_path / f"good{i}.jpg") for i in range(3)]
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    whole = (tmp_path / "good0.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    save(tmp_path / "small.jpg", size=(100, 100))
    (tmp_path / "empty.png").write_bytes(b"")
    messages = []
    images, kept, skipped = gf.load_faces(gf.list_image_files(tmp_path), log=messages.append)
    assert sorted(kept) == sorted(map(str, good))
    assert images.shape == (3, 64, 64, 3)
    reasons = {path.rsplit("/", 1)[1]: reason for path, reason in skipped}
    assert set(reasons) == {"corrupt.jpg", "truncated.jpg", "small.jpg", "empty.png"}
    assert "smaller than the 108x108 crop" in reasons["small.jpg"]
    report = "\n".join(messages)
    assert "skipped 4 of 7" in report and "truncated.jpg" in report


def test_real_celeba_faces_load_in_range():
    folder = real_faces_or_skip()
    files = gf.list_image_files(folder)[:32]
    images, kept, skipped = gf.load_faces(files, log=lambda *_: None)
    assert len(kept) == 32 and not skipped
    assert images.shape == (32, 64, 64, 3) and images.dtype == np.uint8
    scaled = gf.to_unit_range(images)
    assert scaled.dtype == np.float32
    assert -1.0 <= scaled.min() < -0.8 and 0.8 < scaled.max() <= 1.0
    # Faces, not flat fields: real photographs vary within and between images.
    assert images.std() > 30 and np.abs(np.diff(images.astype(int), axis=0)).mean() > 10


def test_demo_faces_are_celeba_format_deterministic_and_varied(tmp_path, demo_dir):
    files = gf.list_image_files(demo_dir)
    with Image.open(files[0]) as first:
        assert (first.format, first.mode, first.size) == ("JPEG", "RGB", (178, 218))
    demo_faces.make_demo_data(tmp_path, num=2, seed=3, log=lambda *_: None)
    again = gf.list_image_files(tmp_path)
    assert [open(p, "rb").read() for p in again] == [open(p, "rb").read() for p in files[:2]]
    images, _, skipped = gf.load_faces(files, log=lambda *_: None)
    assert not skipped
    pairwise = [np.abs(images[i].astype(int) - images[j]).mean()
                for i in range(10) for j in range(i + 1, 10)]
    assert min(pairwise) > 10  # no two faces alike


def test_demo_painter_draws_a_different_face_for_every_seed_and_the_same_for_one():
    digests = set()
    for seed in range(200):  # every palette and hair style comes up
        face = np.asarray(demo_faces.draw_demo_face(np.random.default_rng([11, seed])))
        crop = face[55:163, 35:143]  # what training sees
        assert crop.std() > 10, f"seed {seed}: a flat picture"
        digests.add(face.tobytes())
    assert len(digests) == 200
    again = demo_faces.draw_demo_face(np.random.default_rng([11, 7]))
    first = demo_faces.draw_demo_face(np.random.default_rng([11, 7]))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))


def test_batches_visit_every_image_once_per_epoch():
    images = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), np.uint8)
    stream = gf.BatchStream(images, batch_size=4, seed=5)
    seen = np.concatenate([next(stream)[:, 0, 0, 0] for _ in range(5)])  # 20 = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert list(seen[:10]) != list(seen[10:])  # reshuffled each epoch


def test_batch_stream_resumes_exactly_and_depends_on_seed():
    images = np.arange(10)[:, None, None, None] * np.ones((10, 1, 1, 1), np.uint8)
    full = gf.BatchStream(images, 4, seed=1)
    batches = [next(full).ravel().tolist() for _ in range(6)]
    resumed = gf.BatchStream(images, 4, seed=1, start_batch=3)
    assert [next(resumed).ravel().tolist() for _ in range(3)] == batches[3:]
    other = gf.BatchStream(images, 4, seed=2)
    assert [next(other).ravel().tolist() for _ in range(6)] != batches


def test_too_few_images_for_a_batch():
    with pytest.raises(ValueError, match="only 3 usable images.*--batch_size"):
        gf.BatchStream(np.zeros((3, 2, 2, 3), np.uint8), batch_size=4, seed=0)


def test_z_is_uniform_seeded_and_per_step():
    z = gf.train_z(seed=1, step=5, batch_size=500, z_dim=100)
    assert z.shape == (500, 100) and z.dtype == np.float32
    assert z.min() >= -1 and z.max() < 1 and abs(z.mean()) < 0.02
    np.testing.assert_array_equal(z, gf.train_z(1, 5, 500, 100))
    assert not np.array_equal(z, gf.train_z(1, 6, 500, 100))
    assert not np.array_equal(gf.sample_grid_z(1, 500, 100), z)


@pytest.mark.parametrize("num, shape", [(64, (512, 512)), (1, (64, 64)), (7, (128, 256)),
                                        (10, (192, 256))])
def test_a_grid_is_as_square_as_the_count_allows(num, shape):
    assert gf.image_grid(np.zeros((num, 64, 64, 3))).shape == shape + (3,)


def test_grid_places_images_rounds_and_clips(tmp_path):
    images = np.full((3, 2, 2, 3), -1.0)
    images[1] = 1.0
    images[2] = 5.0  # out of range: clipped
    images[0, 0, 0] = 0.0  # 127.5 rounds to 128
    grid = gf.image_grid(images)  # 1 row x 3 columns
    assert grid.shape == (2, 6, 3)
    assert grid[0, 0, 0] == 128 and grid[1, 1, 0] == 0
    assert (grid[:, 2:4] == 255).all() and (grid[:, 4:] == 255).all()
    path = gf.save_grid(images, tmp_path / "out" / "grid.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
