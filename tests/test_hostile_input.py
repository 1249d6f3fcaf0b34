"""A data folder salted with broken and unusual files: used or skipped, never fatal."""

import io
import os
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

import generate_face as gf
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
