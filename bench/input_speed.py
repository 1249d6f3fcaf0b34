"""How fast the input side delivers images, and how long a training step waits for it.

    python bench/input_speed.py                    # real faces if present, and demo faces
    python bench/input_speed.py --repeats 5 --step_model 32

Prints, for each data set (median of --repeats):
  - first pass from JPEG: decode + crop + resize into a fresh cache, images/s,
    with all cores and with one process;
  - from the cache: uint8 batches of 64 out of the real tf.data iterator
    through sess.run, images/s;
  - input share of a training step: the time to fetch one batch alone over
    the time of one full training step (D + G update) at --step_model width.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import tensorflow as tf  # noqa: E402

import demo_faces  # noqa: E402
import generate_face  # noqa: E402
import training_graph  # noqa: E402
from gan_model import HParams  # noqa: E402

tf1 = tf.compat.v1
REAL_FACES = PROJECT.parent / "shared" / "data" / "celeba_sample"


def quiet(*_):
    pass


def first_pass_rate(folder, workers, repeats):
    """Median images/s of building a cache from the JPEGs."""
    files = generate_face.list_image_files(folder)
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache_dir:
            started = time.perf_counter()
            generate_face.FaceCache(cache_dir, folder).build(
                files, generate_face.Preprocessing(), workers, log=quiet)
            rates.append(len(files) / (time.perf_counter() - started))
    return statistics.median(rates)


def cached_rate(images, batches, repeats):
    """Median images/s of uint8 batches fetched from the training iterator."""
    hparams = HParams()
    rates = []
    with tf.Graph().as_default():
        iterator, start_batch = training_graph.build_input(images, hparams)
        batch = iterator.get_next()
        with tf1.Session() as sess:
            sess.run(iterator.initializer, {start_batch: 0})
            for _ in range(20):  # warm up, fill the prefetch buffer
                sess.run(batch.op)
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(batches):
                    sess.run(batch.op)
                rates.append(batches * hparams.batch_size / (time.perf_counter() - started))
    return statistics.median(rates)


def input_share_of_step(images, width, steps, repeats):
    """(seconds to fetch a batch alone, seconds per training step)."""
    hparams = HParams(gf_dim=width, df_dim=width)
    parts = training_graph.build(hparams, images)
    fetch_times, step_times = [], []
    with tf1.Session(graph=parts.graph, config=hardware.session_config()) as sess:
        sess.run(parts.init)
        sess.run(parts.iterator.initializer, {parts.start_batch: 0})
        real = parts.graph.get_tensor_by_name("IteratorGetNext:0")
        z = generate_face.train_z(0, 0, hparams.batch_size, hparams.z_dim)
        iteration = training_graph.update_runs(parts, hparams.schedule)
        for _ in range(3):  # warm up
            for ops in iteration:
                sess.run(ops, {parts.z: z})
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(steps):
                sess.run(real.op)
            fetch_times.append((time.perf_counter() - started) / steps)
            started = time.perf_counter()
            for _ in range(steps):
                for ops in iteration:
                    sess.run(ops, {parts.z: z})
            step_times.append((time.perf_counter() - started) / steps)
    return statistics.median(fetch_times), statistics.median(step_times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure (median)")
    parser.add_argument("--batches", type=int, default=500,
                        help="batches per from-cache measurement")
    parser.add_argument("--step_model", type=int, default=64,
                        help="gf_dim = df_dim of the model for the step-share figure")
    parser.add_argument("--steps", type=int, default=5, help="steps per step-share measurement")
    parser.add_argument("--demo_faces", type=int, default=2000,
                        help="synthetic faces to draw for the demo data set")
    args = parser.parse_args(argv)
    print(hardware.describe(), flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        sets = []
        if REAL_FACES.is_dir():
            sets.append(("CelebA sample", REAL_FACES))
        else:
            print(f"real faces not found at {REAL_FACES}: measuring the demo data only")
        demo = Path(scratch) / "demo"
        demo_faces.make_demo_data(demo, args.demo_faces, log=quiet)
        sets.append(("demo faces", demo))

        print(f"{os.cpu_count()} cores; TensorFlow {tf.__version__}; "
              f"median of {args.repeats}\n")
        for name, folder in sets:
            count = len(generate_face.list_image_files(folder))
            all_cores = first_pass_rate(folder, None, args.repeats)
            one_core = first_pass_rate(folder, 1, args.repeats)
            cache_dir = Path(scratch) / "cache"
            images, _, _ = generate_face.load_dataset(
                folder, generate_face.Preprocessing(), cache_dir, log=quiet)
            from_cache = cached_rate(images, args.batches, args.repeats)
            fetch, step = input_share_of_step(images, args.step_model, args.steps, args.repeats)
            print(f"{name} ({count} images, 178x218 JPEG -> 64x64)")
            print(f"  first pass from JPEG, {generate_face.decode_workers()} processes: "
                  f"{all_cores:8.0f} images/s")
            print(f"  first pass from JPEG, 1 process:   {one_core:8.0f} images/s")
            print(f"  from the cache, batches of 64:     {from_cache:8.0f} images/s")
            print(f"  batch fetch alone {fetch * 1000:.2f} ms vs training step "
                  f"{step * 1000:.0f} ms (gf/df {args.step_model}): "
                  f"input is {100 * fetch / step:.2f}% of the step\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
