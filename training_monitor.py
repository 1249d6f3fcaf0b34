"""What watches a run while it trains, besides its losses.

- CollapseWatchdog: warns when D's loss stays near 0 or the fixed-z samples
  stay far less varied than real faces (the two usual GAN failures).
- Evaluation: KID, FID and SWD of G's faces every --eval_every steps, and
  the best checkpoint so far kept in <ckpt_dir>/best; NoEvaluation is its
  do-nothing stand-in when no --eval_real_dir is given.

train_gan.py calls both from its loop; neither changes what training does.
"""

import json
import os
import time
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

import gan_run
import generate_face
import metrics

tf1 = tf.compat.v1

STREAM_WATCHDOG = 5  # the watchdog's sample of real faces (see generate_face.run_rng)


def scalars(values):
    """A TensorBoard Summary of {tag: number}."""
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)
                              for tag, value in values.items()])


def format_seconds(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class CollapseWatchdog:
    """Spots the two usual GAN failures while a run trains, and says so.

    D's loss staying near 0 means D wins and G's gradient vanishes; fixed-z
    samples that stay much less varied than real faces mean G draws one
    face (mode collapse). Either must last `window` steps, counted only
    after the first `window` steps of the run, when an untrained G's grey
    pictures and an early D lead are normal.
    """

    D_LOSS_FLOOR = 0.05

    @classmethod
    def for_run(cls, window, images, seed):
        """A watchdog whose yardstick is the variety of a seeded sample of the
        run's own faces (uint8 [N, H, W, 3])."""
        rng = generate_face.run_rng(seed, STREAM_WATCHDOG)
        picked = np.sort(rng.permutation(len(images))[:metrics.DIVERSITY_IMAGES])
        return cls(window, metrics.diversity(images[picked]))

    def __init__(self, window, real_diversity):
        self.window = window
        self.real_diversity = real_diversity
        self._low_d_since = None        # first step of the current streak
        self._low_variety_since = None
        self._warned = set()            # streak kinds already reported

    def _streak(self, kind, since, step, low):
        if not low or step <= self.window:
            self._warned.discard(kind)
            return None, False
        since = step if since is None else since
        due = step - since + 1 >= self.window and kind not in self._warned
        if due:
            self._warned.add(kind)
        return since, due

    def observe_d_loss(self, step, d_loss):
        """Called every step; returns a warning or None."""
        self._low_d_since, due = self._streak("d", self._low_d_since, step,
                                              d_loss < self.D_LOSS_FLOOR)
        if due:
            return (f"warning: possible collapse at step {step}: D's loss has stayed below "
                    f"{self.D_LOSS_FLOOR} for {self.window} steps, so G learns almost "
                    f"nothing. Try resuming from an earlier checkpoint with a lower "
                    f"--d_learning_rate or --real_label 0.9")
        return None

    def observe_samples(self, step, sample_diversity):
        """Called on log steps with the fixed-z samples' diversity; returns
        (their diversity relative to real faces, a warning or None)."""
        ratio = sample_diversity / max(self.real_diversity, 1e-12)
        self._low_variety_since, due = self._streak(
            "variety", self._low_variety_since, step, ratio < metrics.COLLAPSE_RATIO)
        if due:
            return ratio, (f"warning: possible mode collapse at step {step}: the fixed-z "
                           f"samples have been less than {metrics.COLLAPSE_RATIO:.0%} "
                           f"as varied as real faces for {self.window} steps (now "
                           f"{ratio:.0%}); look at the sample grids")
        return ratio, None


BEST_DIR = "best"             # <ckpt_dir>/best: the best-scoring checkpoint, as a run folder
BEST_SCORES = "scores.json"   # in BEST_DIR: its step and scores
EVAL_BATCH = 250              # faces generated per Session.run


class NoEvaluation:
    """The evaluation seam without --eval_real_dir: never due."""

    def due(self, step):
        return False

    def __call__(self, step, sess, training, writer):
        pass


def evaluation_for(run, hparams, cluster, log):
    """The run's Evaluation: the chief's, with --eval_real_dir; else NoEvaluation."""
    if run.eval_real_dir and cluster.is_chief:
        return Evaluation(run, hparams, cluster.layout.replicas, log)
    return NoEvaluation()


def read_best(ckpt_dir):
    """The scores of the run's best checkpoint so far ({"step", "metric", ...}), or None."""
    path = Path(ckpt_dir) / BEST_DIR / BEST_SCORES
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Evaluation:
    """KID, FID and SWD of G's faces every --eval_every steps, printed and
    logged to TensorBoard (eval/kid, eval/kid_std, eval/fid, eval/swd,
    eval/seconds), the chief's only.

    The generated faces come from evaluate_gan.py's z for --seed 0 (G's
    moving average when the run keeps one), the real ones are the faces
    that evaluate_gan.py --seed 0 compares, and their Inception features are
    computed once: a checkpoint scores here what `evaluate_gan.py
    --num_images <--eval_num_images>` gives it. The best checkpoint by KID
    (by SWD without the Inception weights) is also saved in <ckpt_dir>/best,
    a run folder of its own that predict_gan.py --checkpoint reads. A failed
    evaluation is a warning: training goes on.
    """

    def __init__(self, run, hparams, replicas, log):
        started = time.monotonic()
        self.every, self.hparams, self.replicas, self.log = (run.eval_every, hparams,
                                                             replicas, log)
        real = generate_face.sample_faces(run.eval_real_dir, gan_run.preprocessing(hparams),
                                          run.eval_num_images,
                                          generate_face.run_rng(0, metrics.STREAM_PICK_REAL), log)
        features = None
        try:
            import inception  # the weights are read only when a run evaluates
            features = inception.InceptionFeatures(session_config=hardware.session_config())
        except FileNotFoundError as error:
            log(f"warning: {error}; the evaluation scores SWD alone")
        self.metric = "kid" if features else "swd"
        self.scorer = metrics.FaceScorer(real, features)
        self.z = generate_face.sample_z(generate_face.run_rng(0, metrics.STREAM_FAKE_Z),
                                        run.eval_num_images, hparams.z_dim)
        self.best_folder = Path(run.ckpt_dir) / BEST_DIR
        self.best = read_best(run.ckpt_dir)
        if self.best and self.best.get("metric") != self.metric:
            self.best = None  # scored by another metric: not comparable
        self._best_pruning_known = False
        self.since = time.monotonic()  # the end of the last evaluation
        log(f"evaluation every {self.every} steps: {self.metric.upper()} decides the best "
            f"checkpoint; {len(real)} real faces ready in "
            f"{format_seconds(self.since - started)}")

    def due(self, step):
        return step % self.every == 0

    def __call__(self, step, sess, training, writer):
        """Score G at `step` (its checkpoint is saved) in the training Session.

        training: the training_graph.TrainingGraph; writer: the run's FileWriter.
        """
        started = time.monotonic()
        training_seconds = started - self.since
        try:
            net = training.eval_net
            fake = np.concatenate([sess.run(net.images_uint8, {net.z: self.z[i:i + EVAL_BATCH]})
                                   for i in range(0, len(self.z), EVAL_BATCH)])
            scores = self.scorer(fake)
            seconds = time.monotonic() - started
            tagged = {f"eval/{name}": value for name, value in scores.items()}
            writer.add_summary(scalars({**tagged, "eval/seconds": seconds}), step)
            improved = self.best is None or scores[self.metric] < self.best[self.metric]
            if improved:
                self.keep_best(step, sess, training.best_saver, scores)
        except Exception as error:  # noqa: BLE001  an evaluation must never cost the run
            self.log(f"warning: the evaluation at step {step} failed "
                     f"({type(error).__name__}: {error}); training goes on")
            return
        finally:
            self.since = time.monotonic()
        shown = []
        if "kid" in scores:
            shown += [f"KID x1e3 {1e3 * scores['kid']:.2f} +- {1e3 * scores['kid_std']:.2f}",
                      f"FID {scores['fid']:.2f}"]
        shown.append(f"SWD {scores['swd']:.2f}")
        shown.append(f"diversity ratio {scores['diversity']:.2f}"
                     + ("  (best so far)" if improved else ""))
        self.log(f"evaluation at step {step}: {'  '.join(shown)}; took "
                 f"{format_seconds(seconds)}, {100 * seconds / max(training_seconds, 1e-9):.0f}% "
                 f"of the {format_seconds(training_seconds)} since the last")

    def keep_best(self, step, sess, saver, scores):
        """Save this step's checkpoint into <ckpt_dir>/best (replacing the
        older best), then its scores: they never name a missing checkpoint."""
        self.best_folder.mkdir(exist_ok=True)
        if not self._best_pruning_known:  # a resumed run replaces its earlier best too
            saver.set_last_checkpoints_with_time(
                [(path, os.path.getmtime(path + ".index"))
                 for path in reversed(gan_run.checkpoints_newest_first(self.best_folder))])
            self._best_pruning_known = True
        path = saver.save(sess, str(self.best_folder / gan_run.CKPT_PREFIX),
                          global_step=step, write_meta_graph=False)
        gan_run.write_run_file(self.best_folder, self.hparams, self.replicas)
        self.best = {"step": step, "checkpoint": path, "metric": self.metric, **scores}
        with generate_face.atomic_path(self.best_folder / BEST_SCORES) as temporary:
            temporary.write_text(json.dumps(self.best, indent=2) + "\n")
