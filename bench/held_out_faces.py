"""The CelebA sample split into training and held-out faces, for the quality benchmarks.

bench/levers.py and bench/race.py train on one part and score against the
other, so that no face they score against was ever trained on. The sample
lives beside the project (../shared/data/celeba_sample) and is never copied
into it: the split is two folders of symbolic links.
"""

from pathlib import Path

import generate_face

REAL_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba_sample"


def split(work_dir, held_out, num_images, log=print):
    """(training folder, uint8 [2 x num_images, 64, 64, 3] held-out faces), or None.

    Twice num_images: the faces scored against, and two halves for the floors.

    The split is by file, with seed 0 (generate_face.split_folder); None, with
    a message, where the CelebA sample is not there.
    """
    if not REAL_FACES.is_dir():
        log(f"skipped: the CelebA sample is not at {REAL_FACES}")
        return None
    train_dir, held_out_dir = generate_face.split_folder(REAL_FACES, work_dir, held_out)
    log(f"{len(generate_face.list_image_files(train_dir))} training faces, {held_out} held "
        f"out (split by file, seed 0)")
    real = generate_face.sample_faces(held_out_dir, generate_face.Preprocessing(), 2 * num_images, 0,
                                  lambda *_: None)
    return train_dir, real
