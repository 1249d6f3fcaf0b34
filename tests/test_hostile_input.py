"""A data folder salted with broken and unusual files: used or skipped, never fatal."""

import io
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import generate_face as gf
import gan_run
import train_gan
from conftest import run_flags


def png_with_declared_size(width, height):
    """A tiny PNG file whose header claims a huge image (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def salt(folder):
    """Write the hostile files; return {name: True if it should be used}."""
    good = Image.new("RGB", (178, 218), (120, 90, 60))
    jpeg = io.BytesIO()
    good.save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    (folder / "zero_bytes.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    (folder / "garbage_after_header.jpg").write_bytes(jpeg[:20] + os.urandom(2000))
    (folder / "text.jpg").write_text("this is not a picture\n")
    Image.fromarray(np.full((218, 178), 40000, np.uint16)).save(folder / "deep_16bit.png")
    Image.new("CMYK", (178, 218), (0, 50, 100, 0)).save(folder / "cmyk.jpg")
    palette = Image.new("RGBA", (178, 218), (200, 30, 30, 128)).convert("P")
    palette.save(folder / "palette_transparent.png", transparency=0)
    frames = [Image.new("RGB", (178, 218), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(folder / "animated.png.tmp", "GIF", save_all=True, append_images=frames[1:])
    (folder / "animated.png.tmp").rename(folder / "animated.png")
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    Image.new("RGB", (100, 100)).save(folder / "smaller_than_crop.jpg")
    (folder / "bomb.png").write_bytes(png_with_declared_size(30000, 30000))
    os.symlink(folder, folder / "loop")  # a folder that contains itself
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    (folder / os.fsdecode(b"caf\xe9_latin1.jpg")).write_bytes(jpeg)  # not UTF-8
    (folder / os.fsdecode(b"bad_\xff_name.jpg")).write_bytes(b"corrupt")  # and skipped
    return {"deep_16bit.png": True, "cmyk.jpg": True, "palette_transparent.png": True,
            "animated.png": True, "latin1": True}


def test_hostile_files_are_used_or_skipped_and_training_goes_on(tmp_path, demo_dir, capsys):
    folder = tmp_path / "faces"
    shutil.copytree(demo_dir, folder)
    usable = salt(folder)
    images, kept, skipped = gf.load_dataset(folder, gf.Preprocessing(), tmp_path / "cache")
    skipped_names = {os.path.basename(path) for path, _ in skipped}
    assert skipped_names == {"zero_bytes.jpg", "truncated.jpg", "garbage_after_header.jpg",
                             "text.jpg", "one_pixel.png", "smaller_than_crop.jpg", "bomb.png",
                             "dangling.jpg", os.fsdecode(b"bad_\xff_name.jpg")}
    assert len(kept) == 40 + len(usable) and len(images) == len(kept)
    deep = images[[os.path.basename(p) for p in kept].index("deep_16bit.png")]
    assert 150 <= deep.mean() <= 160  # 40000 / 65535 of full scale, not white
    report = capsys.readouterr().out
    assert "skipped 9 of 54" in report and "bomb.png" in report and "bad_" in report

    assert train_gan.main(run_flags(tmp_path, folder, 2)) == 0
    assert "training on 45 images" in capsys.readouterr().out


def without_permission_override():
    """preexec_fn for subprocess: let file permissions bind, even for root.

    Root reads any file through two capabilities; dropping them from the
    bounding set before exec leaves the child without them (None when not
    root, where permissions bind anyway).
    """
    if os.geteuid() != 0:
        return None

    def drop():
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
        for capability in (cap_dac_override, cap_dac_read_search):
            if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot drop a capability")
    return drop


LOAD_AND_REPORT = """
import sys
sys.path.insert(0, sys.argv[1])
import generate_face as gf
images, kept, skipped = gf.load_faces(gf.list_image_files(sys.argv[2]))
print("kept", len(kept))
"""


def test_unreadable_file_is_skipped_and_named(tmp_path, demo_dir):
    import subprocess
    import sys
    from conftest import PROJECT
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in sorted(demo_dir.iterdir())[:5]:
        shutil.copy(path, folder / path.name)
    locked = folder / "locked.jpg"
    shutil.copy(next(demo_dir.iterdir()), locked)
    locked.chmod(0)
    try:
        done = subprocess.run([sys.executable, "-c", LOAD_AND_REPORT, str(PROJECT), str(folder)],
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=without_permission_override())
    except OSError as error:  # e.g. a container that may not drop capabilities
        pytest.skip(f"cannot make a file unreadable for this user here: {error}")
    assert done.returncode == 0, done.stderr
    assert "kept 5" in done.stdout
    assert "skipped 1 of 6" in done.stdout and "locked.jpg" in done.stdout
    assert "Permission denied" in done.stdout


def test_disk_full_while_saving_names_the_folder_and_keeps_the_last_checkpoint(
        tmp_path, demo_dir):
    import resource
    import signal
    import subprocess
    import sys
    from conftest import PROJECT
    flags = run_flags(tmp_path, demo_dir, 2, "--ckpt_every", "1")
    assert train_gan.main(flags) == 0
    data_file = next((tmp_path / "ckpt").glob("gan.ckpt-2.data-*"))
    limit = data_file.stat().st_size // 2

    def small_disk():
        # The kernel refuses writes past `limit` bytes in any one file with
        # EFBIG, as a full disk refuses them with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    resumed = run_flags(tmp_path, demo_dir, 4, "--ckpt_every", "1", tiny=False)
    done = subprocess.run([sys.executable, str(PROJECT / "train_gan.py"), *resumed],
                          capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"could not write a checkpoint to {tmp_path / 'ckpt'} at step 3" in done.stderr
    assert "gan.ckpt-2) is intact" in done.stderr
    assert gan_run.latest_checkpoint(tmp_path / "ckpt").endswith("gan.ckpt-2")
    # With the space back, the same command resumes from it and finishes.
    assert train_gan.main(resumed) == 0
    assert gan_run.latest_checkpoint(tmp_path / "ckpt").endswith("gan.ckpt-4")
