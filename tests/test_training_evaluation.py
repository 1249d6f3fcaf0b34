"""Evaluation during training: KID, FID and SWD in TensorBoard, the best checkpoint kept."""

import json

import numpy as np
import pytest

import evaluate_gan
import metrics
import predict_gan
import train_gan
from conftest import run_flags

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed")

EVAL = ["--eval_every", "5", "--eval_num_images", "12"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, demo_dir):
    """A tiny run of 10 steps, evaluated at steps 5 and 10 against the demo faces."""
    root = tmp_path_factory.mktemp("evaluated")
    assert train_gan.main(run_flags(root, demo_dir, 10, "--eval_real_dir", str(demo_dir),
                                    *EVAL, "--log_every", "5")) == 0
    return root


def scalars(run_dir, tag):
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={
        event_accumulator.SCALARS: 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def test_every_evaluation_is_logged_with_its_cost(evaluated_run):
    logs = evaluated_run / "logs" / "ckpt"
    for tag in ("eval/kid", "eval/kid_std", "eval/fid", "eval/swd", "eval/diversity",
                "eval/seconds"):
        values = scalars(logs, tag)
        assert sorted(values) == [5, 10], tag
        assert all(np.isfinite(v) for v in values.values()), tag
    assert all(v > 0 for v in scalars(logs, "eval/fid").values())


def test_the_best_checkpoint_is_kept_and_scores_as_evaluate_gan_scores_it(
        evaluated_run, demo_dir, capsys):
    kids = scalars(evaluated_run / "logs" / "ckpt", "eval/kid")
    best = json.loads((evaluated_run / "ckpt" / "best" / "scores.json").read_text())
    assert best["metric"] == "kid" and best["step"] == min(kids, key=kids.get)
    # The same checkpoint, scored afresh by evaluate_gan.py with the same count.
    assert evaluate_gan.main(["--checkpoint", str(evaluated_run / "ckpt" / "best"),
                              "--real_dir", str(demo_dir), "--num_images", "12",
                              "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["step"] == best["step"]
    for name in ("kid", "fid"):
        assert fresh[name] == pytest.approx(best[name], rel=1e-4, abs=1e-6), name
    assert fresh["swd"]["avg"] == pytest.approx(best["swd"], rel=1e-4)
    assert fresh["diversity"]["ratio"] == pytest.approx(best["diversity"], rel=1e-4)


def test_predict_draws_from_the_best_checkpoint(evaluated_run, tmp_path):
    out = tmp_path / "face.png"
    assert predict_gan.main(["--checkpoint", str(evaluated_run / "ckpt" / "best"),
                             "--out", str(out)]) == 0
    assert out.is_file()


def test_a_failing_evaluation_is_a_warning_and_the_run_goes_on(tmp_path, demo_dir,
                                                               monkeypatch):
    def broken(self, fake):
        raise MemoryError("no room for the features")
    monkeypatch.setattr(metrics.FaceScorer, "__call__", broken)
    assert train_gan.main(run_flags(tmp_path, demo_dir, 10, "--eval_real_dir", str(demo_dir),
                                    *EVAL)) == 0
    assert (tmp_path / "ckpt" / "gan.ckpt-10.index").is_file()
    assert not (tmp_path / "ckpt" / "best").exists()


def test_an_empty_evaluation_folder_is_an_error_before_any_step(tmp_path, demo_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_gan.main(run_flags(tmp_path, demo_dir, 10, "--eval_real_dir", str(empty),
                                    *EVAL)) == 1
    assert "no images" in capsys.readouterr().err
    assert not list((tmp_path / "ckpt").glob("gan.ckpt-*"))
