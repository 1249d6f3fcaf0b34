"""What scoring faces costs: Inception features, FID, KID and SWD, by face count.

    python bench/eval_cost.py                      # 250, 500, 1000, 2000 faces
    python bench/eval_cost.py --counts 1000
    TF_ENABLE_ONEDNN_OPTS=0 python bench/eval_cost.py --counts 1000

Uses the CelebA sample (../shared/data/celeba_sample) where it is present,
else demo faces painted on the fly, preprocessed to 64x64 as training does;
the features do not depend on what the faces show. Each count is timed
after one warm-up batch, so that graph optimisation is counted apart, as
the one-off cost it is. Prints the machine, then one row per count: seconds
for the Inception features (and faces per second), for FID and for KID
between two sets of that size, and for SWD.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import numpy as np  # noqa: E402

import demo_faces  # noqa: E402
import generate_face  # noqa: E402
import inception  # noqa: E402
import metrics  # noqa: E402

REAL_FACES = PROJECT.parent / "shared" / "data" / "celeba_sample"


def faces(count):
    """uint8 [count, 64, 64, 3]: CelebA sample faces, or demo faces, repeated as needed."""
    if REAL_FACES.is_dir():
        images = generate_face.sample_faces(REAL_FACES, generate_face.Preprocessing(),
                                            count,
                                            generate_face.run_rng(0, metrics.STREAM_PICK_REAL),
                                            log=lambda *_: None)
    else:
        with tempfile.TemporaryDirectory() as folder:
            demo_faces.make_demo_data(folder, num=min(count, 500), seed=0, log=lambda *_: None)
            images, _, _ = generate_face.load_faces(generate_face.list_image_files(folder),
                                                    log=lambda *_: None)
    return np.resize(images, (count,) + images.shape[1:])


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--counts", default="250,500,1000,2000",
                        help="comma-separated face counts")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    print(hardware.describe(), flush=True)
    try:
        network, build_seconds = timed(inception.InceptionFeatures, "",
                                       hardware.session_config())
    except FileNotFoundError as error:
        print(f"skipped: {error}")
        return 0
    images = faces(2 * max(counts))
    _, warm_seconds = timed(network, images[:network.batch_size])
    print(f"Inception: read and built in {build_seconds:.1f} s; first batch of "
          f"{network.batch_size} in {warm_seconds:.1f} s (graph optimisation included)")
    print("\n| faces | features (s) | faces/s | FID (s) | KID (s) | SWD (s) |")
    print("|---|---|---|---|---|---|")
    for count in counts:
        a, b = images[:count], images[count:2 * count]
        features_a, seconds = timed(network, a)
        features_b = network(b)
        _, fid_seconds = timed(metrics.fid_of_features, features_a, features_b)
        _, kid_seconds = timed(metrics.kernel_inception_distance, features_a, features_b)
        _, swd_seconds = timed(metrics.swd, a, b)
        print(f"| {count} | {seconds:.1f} | {count / seconds:.1f} | {fid_seconds:.1f} | "
              f"{kid_seconds:.1f} | {swd_seconds:.1f} |", flush=True)
    network.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
