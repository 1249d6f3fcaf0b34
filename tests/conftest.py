"""Shared fixtures: small demo data sets and one tiny trained run."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hardware  # noqa: E402, F401  (before TensorFlow, as in the scripts)
import demo_faces  # noqa: E402
import train_gan  # noqa: E402

# Real CelebA faces shared beside the project; never copied into it.
REAL_FACES = PROJECT.parent / "shared" / "data" / "celeba_sample"

# A tiny model: seconds per run on 2 CPU cores.
TINY = ["--gf_dim", "8", "--df_dim", "8", "--z_dim", "16", "--batch_size", "8"]


def real_faces_or_skip():
    if not REAL_FACES.is_dir():
        pytest.skip(f"real CelebA sample not found at {REAL_FACES}")
    return REAL_FACES


def copy_run_with_hparams(run_root, destination, **changes):
    """Copy a run's checkpoint folder and edit its hparams.json; returns the copy."""
    ckpt = destination / "ckpt"
    shutil.copytree(run_root / "ckpt", ckpt)
    saved = json.loads((ckpt / "hparams.json").read_text())
    saved["hparams"].update(changes)
    (ckpt / "hparams.json").write_text(json.dumps(saved))
    return ckpt


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """40 synthetic faces in CelebA's format."""
    folder = tmp_path_factory.mktemp("demo_faces")
    demo_faces.make_demo_data(folder, num=40, seed=3, log=lambda *_: None)
    return folder


def run_flags(root, data_root, max_steps, *extra, tiny=True):
    """Command-line flags of a training run writing under `root`.

    tiny=False leaves out the architecture flags, as a user resuming would.
    """
    return ["--data_root", str(data_root), "--ckpt_dir", str(root / "ckpt"),
            "--samples_dir", str(root / "samples"), "--log_dir", str(root / "logs"),
            "--cache_dir", str(root / "cache"), "--max_steps", str(max_steps),
            *(TINY if tiny else []), *extra]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_dir):
    """A tiny run trained for 3 steps; tests must not modify it."""
    root = tmp_path_factory.mktemp("trained")
    assert train_gan.main(run_flags(root, demo_dir, 3, "--log_every", "1")) == 0
    return root


@pytest.fixture(scope="session")
def drawing_run(tmp_path_factory, demo_dir):
    """A tiny run trained long enough that its generator draws visible pictures
    (a freshly initialised one outputs nearly uniform grey); read only."""
    root = tmp_path_factory.mktemp("drawing")
    assert train_gan.main(run_flags(root, demo_dir, 200, "--log_every", "100",
                                    "--sample_every", "200")) == 0
    return root
