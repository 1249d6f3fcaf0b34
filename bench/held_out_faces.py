"""The CelebA sample split into training and held-out faces, for the quality benchmarks.

bench/levers.py and bench/race.py train on one part and score against the
other, so that no face they score against was ever trained on. The sample
lives beside the project (../shared/data/celeba_sample) and is never copied
into it: the split is two folders of symbolic links.
"""

from pathlib import Path

import numpy as np

import generate_face
import metrics

REAL_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba_sample"


def split_folder(source, out_dir, held_out, seed=0):
    """Split the images of `source` by file into out_dir/train and out_dir/held_out.

    `held_out` files, picked by a seeded permutation, go to held_out/, the
    rest to train/, as symbolic links (nothing is copied). Returns the two
    folders. Running it again with the same arguments changes nothing.
    """
    paths = generate_face.list_image_files(source)
    order = np.random.default_rng(seed).permutation(len(paths))
    for name, picked in (("held_out", order[:held_out]), ("train", order[held_out:])):
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in picked:
            link = folder / Path(paths[i]).name
            if not link.exists():
                link.symlink_to(Path(paths[i]).resolve())
    return Path(out_dir) / "train", Path(out_dir) / "held_out"



def split(work_dir, held_out, num_images, log=print):
    """(training folder, uint8 [2 x num_images, 64, 64, 3] held-out faces), or None.

    Twice num_images: the faces scored against, and two halves for the floors.

    The split is by file, with seed 0 (split_folder); None, with
    a message, where the CelebA sample is not there.
    """
    if not REAL_FACES.is_dir():
        log(f"skipped: the CelebA sample is not at {REAL_FACES}")
        return None
    train_dir, held_out_dir = split_folder(REAL_FACES, work_dir, held_out)
    log(f"{len(generate_face.list_image_files(train_dir))} training faces, {held_out} held "
        f"out (split by file, seed 0)")
    real = generate_face.sample_faces(held_out_dir, generate_face.Preprocessing(), 2 * num_images,
                                      generate_face.run_rng(0, metrics.STREAM_PICK_REAL),
                                  lambda *_: None)
    return train_dir, real
