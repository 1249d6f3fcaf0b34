"""The demo data set: synthetic faces in CelebA's aligned format.

A fresh clone trains on these with no download, and the tests use them.
Each face is painted from (seed, i) alone, so the set is the same on every
machine: a background, shoulders, a head with skin tone, hair, eyes, brows,
nose and mouth drawn from palettes and jittered, placed where CelebA's
aligned faces have them, then blurred and noised a little like a photo.

    python demo_faces.py data/demo_faces --num 2000
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import generate_face

# CelebA's img_align_celeba format, which the demo faces imitate.
CELEBA_WIDTH = 178
CELEBA_HEIGHT = 218


# Palettes the painter draws from. Skin tones run from very light to very
# dark; hair colours cover black, browns, blond, red and grey.
SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96),
              (161, 102, 70), (120, 75, 50), (88, 56, 38)]
HAIR_COLOURS = [(20, 17, 15), (45, 30, 22), (85, 55, 35), (130, 90, 55),
                (190, 150, 90), (225, 200, 140), (150, 60, 30), (160, 160, 160)]
EYE_COLOURS = [(60, 40, 25), (95, 65, 35), (60, 100, 150), (70, 120, 80),
               (40, 40, 40)]

SUPERSAMPLE = 2  # faces are painted at twice the size, then shrunk: smooth edges


def _jitter(colour, rng, amount):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255))
                 for c in colour)


def _shade(colour, factor):
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _background(rng, width, height):
    """A vertical two-colour gradient, like a studio or outdoor backdrop."""
    # Mixed towards grey: photo backdrops are rarely fully saturated.
    grey = rng.uniform(60, 200)
    top = 0.55 * rng.integers(0, 256, 3) + 0.45 * grey
    bottom = np.clip(top + rng.integers(-70, 71, 3), 0, 255)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    gradient = (1 - t) * top + t * bottom
    pixels = np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGBA")


def _box(cx, cy, rx, ry):
    """The bounding box of an ellipse in the supersampled canvas."""
    s = SUPERSAMPLE
    return [s * (cx - rx), s * (cy - ry), s * (cx + rx), s * (cy + ry)]


@dataclasses.dataclass(frozen=True)
class _Head:
    """Where the head is and its colours, in the CelebA frame (178 x 218)."""
    cx: float
    cy: float
    rx: float
    ry: float
    skin: tuple
    hair: tuple
    hair_style: str


def _paint_person(rng, width, height):
    """Paint hair, head, features and shoulders on a transparent layer.

    Coordinates are in the CelebA aligned frame (178 x 218), scaled by
    SUPERSAMPLE: the eyes sit near y 112, the face fills the centre crop.
    The painting steps draw from `rng` in a fixed order, so a face depends
    only on its seed.
    """
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    skin = _jitter(SKIN_TONES[rng.integers(len(SKIN_TONES))], rng, 12)
    hair = _jitter(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], rng, 10)
    clothes = tuple(int(c) for c in rng.integers(0, 256, 3))
    head = _Head(cx=89.0, cy=122.0 + rng.uniform(-3, 3), rx=rng.uniform(33, 42),
                 ry=rng.uniform(45, 54), skin=skin, hair=hair,
                 hair_style=str(rng.choice(["short", "long", "bob", "bald", "bangs"],
                                           p=[0.3, 0.3, 0.2, 0.05, 0.15])))
    _paint_body_and_head(draw, head, clothes, rng)
    _paint_hair_on_top(draw, head, rng)
    eye_y = _paint_eyes(draw, head, rng)
    _paint_nose_and_mouth(draw, head, eye_y, rng)
    return layer


def _paint_body_and_head(draw, head, clothes, rng):
    """Shoulders, neck and long hair behind the head, then the ears and the head."""
    s, cx = SUPERSAMPLE, head.cx
    shoulder_y = head.cy + head.ry + 35
    draw.ellipse(_box(cx, shoulder_y + 40, rng.uniform(70, 90), 55), fill=clothes)
    neck_w = head.rx * 0.55
    draw.rectangle([s * (cx - neck_w), s * (head.cy + head.ry * 0.6),
                    s * (cx + neck_w), s * (shoulder_y - 5)], fill=_shade(head.skin, 0.85))
    if head.hair_style in ("long", "bob"):
        depth = head.ry * (1.35 if head.hair_style == "long" else 0.75)
        draw.rounded_rectangle(
            [s * (cx - head.rx - 10), s * (head.cy - head.ry - 8),
             s * (cx + head.rx + 10), s * (head.cy + depth)],
            radius=s * 25, fill=head.hair)
    for side in (-1, 1):
        draw.ellipse(_box(cx + side * head.rx * 0.97, head.cy - 2, 6, 10),
                     fill=_shade(head.skin, 0.92))
    draw.ellipse(_box(cx, head.cy, head.rx, head.ry), fill=head.skin)


def _paint_hair_on_top(draw, head, rng):
    """A cap of hair, and for bangs a fringe that stops above the brows."""
    if head.hair_style == "bald":
        return
    brow_room = 14  # pixels kept free of hair above the eyes
    top = head.cy - head.ry
    cap_depth = rng.uniform(14, 26)
    draw.chord(_box(head.cx, top + cap_depth, head.rx + 4, cap_depth + 8),
               180, 360, fill=head.hair)
    if head.hair_style == "bangs":
        fringe_depth = max(3.0, (head.ry * 0.8 - brow_room - cap_depth) / 2)
        draw.chord(_box(head.cx, top + cap_depth + 4, head.rx * 0.85, fringe_depth),
                   0, 180, fill=head.hair)


def _paint_eyes(draw, head, rng):
    """Eyes, brows and sometimes glasses, symmetric about the centre line; returns
    the eyes' height."""
    s, cx = SUPERSAMPLE, head.cx
    eye_y = head.cy - head.ry * 0.2
    eye_dx = head.rx * rng.uniform(0.42, 0.5)
    eye_rx, eye_ry = rng.uniform(6, 8.5), rng.uniform(3, 4.5)
    iris = _jitter(EYE_COLOURS[rng.integers(len(EYE_COLOURS))], rng, 10)
    gaze = rng.uniform(-1.5, 1.5)
    brow_lift = rng.uniform(7, 11)
    brow_colour = (_shade(head.hair, 0.8) if head.hair_style != "bald"
                   else _shade(head.skin, 0.5))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse(_box(ex, eye_y, eye_rx, eye_ry), fill=(245, 245, 240))
        draw.ellipse(_box(ex + gaze, eye_y, eye_ry * 0.9, eye_ry * 0.9), fill=iris)
        draw.ellipse(_box(ex + gaze, eye_y, eye_ry * 0.4, eye_ry * 0.4), fill=(10, 10, 10))
        draw.line([s * (ex - eye_rx), s * (eye_y - brow_lift),
                   s * (ex + eye_rx), s * (eye_y - brow_lift - 1.5)],
                  fill=brow_colour, width=int(s * rng.uniform(2, 3.5)))
    if rng.random() < 0.12:  # glasses
        frame = tuple(int(c) for c in rng.integers(0, 80, 3))
        for side in (-1, 1):
            draw.ellipse(_box(cx + side * eye_dx, eye_y, eye_rx + 4, eye_ry + 5),
                         outline=frame, width=2 * s)
        draw.line([s * (cx - eye_dx + eye_rx + 4), s * eye_y,
                   s * (cx + eye_dx - eye_rx - 4), s * eye_y], fill=frame, width=2 * s)
    return eye_y


def _paint_nose_and_mouth(draw, head, eye_y, rng):
    """A shadowed nose ridge and nostrils; a smile, a neutral line or an open mouth."""
    s, cx, skin = SUPERSAMPLE, head.cx, head.skin
    nose_y = head.cy + head.ry * 0.15
    draw.line([s * (cx + 1), s * (eye_y + 4), s * (cx + 3), s * nose_y],
              fill=_shade(skin, 0.78), width=s * 2)
    for side in (-1, 1):
        draw.ellipse(_box(cx + side * 4, nose_y + 1, 2.2, 1.5), fill=_shade(skin, 0.6))
    mouth_y = head.cy + head.ry * rng.uniform(0.42, 0.5)
    mouth_w = head.rx * rng.uniform(0.35, 0.5)
    lips = _shade(_jitter((180, 80, 80), rng, 20), rng.uniform(0.8, 1.05))
    expression = rng.choice(["smile", "neutral", "open"], p=[0.5, 0.3, 0.2])
    if expression == "smile":
        draw.chord(_box(cx, mouth_y - 3, mouth_w, 7), 0, 180, fill=lips)
        draw.chord(_box(cx, mouth_y - 3, mouth_w * 0.8, 4), 0, 180, fill=(250, 250, 245))
    elif expression == "open":
        draw.ellipse(_box(cx, mouth_y, mouth_w * 0.6, 5), fill=lips)
        draw.ellipse(_box(cx, mouth_y, mouth_w * 0.4, 3), fill=(60, 20, 20))
    else:
        draw.line([s * (cx - mouth_w), s * mouth_y, s * (cx + mouth_w), s * mouth_y],
                  fill=lips, width=int(s * 2.5))


def draw_demo_face(rng):
    """One synthetic face photo in CelebA's aligned format.

    Args:
      rng: numpy Generator; the same generator state gives the same face.

    Returns:
      a PIL RGB image, 178 wide x 218 high.
    """
    s = SUPERSAMPLE
    width, height = CELEBA_WIDTH * s, CELEBA_HEIGHT * s
    canvas = _background(rng, width, height)
    person = _paint_person(rng, width, height)
    # Pose jitter: a small rotation, scale and shift about the face centre.
    angle = np.deg2rad(rng.uniform(-7, 7))
    scale = rng.uniform(0.92, 1.08)
    shift_x, shift_y = rng.uniform(-4, 4, 2) * s
    cx, cy = width / 2, 122 * s
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # Image.transform maps output to input pixels: the inverse transform.
    matrix = (cos, sin, cx - cos * (cx + shift_x) - sin * (cy + shift_y),
              -sin, cos, cy + sin * (cx + shift_x) - cos * (cy + shift_y))
    person = person.transform(canvas.size, Image.Transform.AFFINE, matrix,
                              resample=Image.Resampling.BILINEAR)
    canvas.alpha_composite(person)
    face = canvas.convert("RGB").resize((CELEBA_WIDTH, CELEBA_HEIGHT),
                                        Image.Resampling.LANCZOS)
    # A little blur and sensor noise so the pictures are not flat cartoons.
    face = face.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    noisy = np.asarray(face, np.float32) + rng.normal(0, 3, (CELEBA_HEIGHT, CELEBA_WIDTH, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_demo_data(out_dir, num=2000, seed=0, log=print):
    """Write `num` synthetic faces as JPEGs (000000.jpg, ...) into `out_dir`.

    Face i depends only on (seed, i), so the set is the same on every
    machine, and a partly written folder is completed rather than redone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for i in range(num):
        path = out_dir / f"{i:06d}.jpg"
        if path.exists():
            continue
        face = draw_demo_face(np.random.default_rng([seed, i]))
        generate_face.atomic_save_image(np.asarray(face), path, quality=92)
        if (i + 1) % 500 == 0:
            log(f"  drew {i + 1}/{num} faces ({time.monotonic() - started:.0f}s)")
    log(f"demo data: {num} faces in {out_dir}")
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    parser.add_argument("out_dir", help="folder to write 000000.jpg, 000001.jpg, ... into")
    parser.add_argument("--num", type=int, default=2000, help="faces to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the faces")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    make_demo_data(args.out_dir, args.num, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
