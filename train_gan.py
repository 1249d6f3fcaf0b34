"""Train the DCGAN on a folder of face photos.

    python train_gan.py --data_root data/demo_faces --max_steps 2000

Checkpoints go to --ckpt_dir (with hparams.json), 8x8 grids from a z fixed
for the run to --samples_dir, TensorBoard logs to --log_dir. Running the same
command again resumes from the newest checkpoint; Ctrl-C or SIGTERM saves a
checkpoint and exits.

The loop is `train_once`, the step `train_step`: (1) update D, (2) update G.
The graph they run is built in training_graph.py; --eval_real_dir's scores
and the collapse watchdog live in training_monitor.py. --devices trains on
several GPUs (or logical CPU devices) of one machine, and TF_CONFIG naming
several workers spreads a run over machines: replicas.py, whose OneWorker or
Workers object is the loop's one contact with the other workers.
"""

import argparse
import dataclasses
import functools
import math
import os
import signal
import sys
import time

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

import gan_run
import generate_face
import replicas
import run_outputs
import training_graph
import training_monitor
from cli_flags import add_flags, below, flag_field
from gan_model import HParams
from training_monitor import format_seconds

tf1 = tf.compat.v1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run reads and writes, how long it runs, how often it reports."""
    data_root: str = flag_field("data/demo_faces", "folder of face images (searched recursively)")
    ckpt_dir: str = flag_field("ckpt", "checkpoints and hparams.json; a run resumes from here")
    samples_dir: str = flag_field("samples", "sample grids train_<step>.png")
    log_dir: str = flag_field("logs", "TensorBoard logs, one folder per run")
    run_name: str = flag_field("", "name of the run in TensorBoard; its logs go to "
                                   "--log_dir/<run_name> ('' = --ckpt_dir's folder name)")
    cache_dir: str = flag_field("cache", "preprocessed-image cache, reused while the "
                                         "folder and settings match ('' = none)")
    max_steps: int = flag_field(20000, "train until the global step reaches this")
    max_minutes: float = flag_field(0.0, "stop once this many minutes have passed since the "
                                         "command started, with a checkpoint and a sample "
                                         "grid, as a clean finish (0: no time limit)")
    log_every: int = flag_field(50, "steps between progress lines and scalar summaries")
    sample_every: int = flag_field(500, "steps between sample grids")
    ckpt_every: int = flag_field(1000, "steps between checkpoints (one is also written at the end)")
    keep_checkpoints: int = flag_field(5, "newest checkpoints kept on disk")
    nan_rollbacks: int = flag_field(0, "on a NaN or infinite loss, resume from the last good "
                                       "checkpoint with halved learning rates, up to this "
                                       "many times (0: stop with an error)")
    collapse_window: int = flag_field(1000, "warn when D's loss stays near 0, or the fixed-z "
                                            "samples stay less than half as varied as real "
                                            "faces, for this many steps (0: no watchdog)")
    eval_real_dir: str = flag_field("", "real faces to score G against while training, "
                                        "ideally faces it does not train on: KID, FID and "
                                        "SWD every --eval_every steps ('' = no evaluation)")
    eval_every: int = flag_field(5000, "steps between evaluations with --eval_real_dir; each "
                                       "follows a checkpoint, and the best is kept in "
                                       "<ckpt_dir>/best")
    eval_num_images: int = flag_field(1000, "generated and real faces per evaluation")
    devices: str = flag_field("auto", "replicas on this machine, each training on its own "
                                      "--batch_size images: auto (every GPU, else the CPU) "
                                      "or N (the first N GPUs; on a machine without GPUs, "
                                      "the CPU split into N logical devices)",
                              type=replicas.parse_devices, metavar="auto|N")
    worker_timeout: float = flag_field(300.0, "with several workers (TF_CONFIG): seconds to "
                                              "wait for the others to start or to finish a "
                                              "step, before stopping with an error that "
                                              "names the worker that is gone")

    def problems(self):
        found = below(self, ["max_steps"], 0)
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            found.append(f"--max_minutes must be 0 (no limit) or a positive number of "
                         f"minutes, got {self.max_minutes}")
        found += below(self, ["log_every", "sample_every", "ckpt_every", "keep_checkpoints"], 1)
        if not (self.worker_timeout > 0 and math.isfinite(self.worker_timeout)):
            found.append(f"--worker_timeout must be a positive number of seconds, "
                         f"got {self.worker_timeout}")
        found += below(self, ["eval_every"], 1)
        if self.eval_num_images < 2:
            found.append(f"--eval_num_images must be at least 2, got {self.eval_num_images}")
        return found + below(self, ["nan_rollbacks", "collapse_window"], 0)


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

def build_parser():
    """Flags generated from RunConfig and HParams, defaults shown in --help.

    Every flag defaults to "not given" (SUPPRESS) so that a resumed run can
    tell the values the user typed from the ones it should restore.
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS, allow_abbrev=False)
    for title, cls in (("run", RunConfig), ("hyperparameters", HParams)):
        add_flags(parser.add_argument_group(title), cls, suppress_defaults=True)
    return parser


def parse_flags(argv=None):
    """argv -> (RunConfig, dict of the hyperparameters given on the command line)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    run = RunConfig(**{k: v for k, v in given.items() if k in run_names})
    overrides = {k: v for k, v in given.items() if k not in run_names}
    problems = run.problems() + dataclasses.replace(HParams(), **overrides).problems()
    if problems:
        parser.error("; ".join(problems))
    return run, overrides


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class StopRequest:
    """Turns SIGINT and SIGTERM into a flag the loop checks after each step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous = {}
        self._announced = False

    def announce_once(self, step, log, what_next):
        """Say, once, that a signal arrived and what the run does about it."""
        if self.signal is not None and not self._announced:
            self._announced = True
            log(f"{signal.Signals(self.signal).name} received: step {step} is done, "
                f"{what_next}")

    def __enter__(self):
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        # No printing here: the signal may arrive while the main thread is
        # inside print(), and a second write to the same stream then raises.
        if self.signal is not None:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        self.signal = number

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; nothing after it was saved.

    Attributes:
      step: the step whose loss was not finite.
      last_good: the newest checkpoint, or None.
      hparams: the hyperparameters of the run that diverged.
    """

    def __init__(self, message, step, last_good, hparams):
        super().__init__(message)
        self.step, self.last_good, self.hparams = step, last_good, hparams


@dataclasses.dataclass
class TrainResult:
    step: int                 # global step reached
    checkpoint: str           # newest checkpoint written or restored
    stopped_by: int = None    # signal number if interrupted, else None
    out_of_time: bool = False  # stopped by --max_minutes
    stopped_by_other_worker: bool = False  # another worker's signal or time limit


def train(run, overrides=None, log=print):
    """Train (or resume) a run. See the module docstring.

    With --nan_rollbacks, a run whose loss stops being finite resumes from
    its last good checkpoint with both learning rates halved (and saved in
    hparams.json, so that a later resume keeps them).

    Args:
      run: RunConfig.
      overrides: hyperparameters given explicitly ({name: value}).
      log: a print-like function for progress output.

    Returns:
      TrainResult.
    """
    overrides = dict(overrides or {})
    # The time limit counts from here, so that it bounds the whole command
    # (data loading and graph building included), rollbacks too.
    deadline = time.monotonic() + run.max_minutes * 60 if run.max_minutes else math.inf
    rollbacks = 0
    while True:
        try:
            return train_once(run, overrides, log, deadline)
        except TrainingDiverged as error:
            if rollbacks == run.nan_rollbacks:
                raise
            rollbacks += 1
            hp = error.hparams
            overrides.update(learning_rate=hp.learning_rate / 2,
                             d_learning_rate=hp.d_learning_rate / 2,
                             g_learning_rate=hp.g_learning_rate / 2)
            log(f"{error}")
            log(f"rollback {rollbacks} of {run.nan_rollbacks}: resuming from "
                f"{error.last_good or 'the start'} with learning rates halved (D "
                f"{hp.d_lr / 2:g}, G {hp.g_lr / 2:g})")


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

def train_once(run, overrides, log, deadline=math.inf):
    """One attempt of `train`: raises TrainingDiverged on a non-finite loss.

    Training stops cleanly (checkpoint, grid) after the step under way when
    a signal arrives or `deadline` (a time.monotonic() value) has passed;
    with several workers, every worker stops after the same step.
    """
    layout = replicas.plan(run.devices)
    cluster = replicas.coordination(layout, run.worker_timeout)
    hparams, checkpoint, images = prepare(run, overrides, log, layout)
    training = training_graph.build(hparams, images, run.keep_checkpoints, layout, cluster)
    step = None  # read by the lost-worker error
    with cluster.session(training.graph, training.strategy) as sess, StopRequest() as stop, \
            cluster.reporting_lost_workers(lambda: step, run.ckpt_dir):
        step, checkpoint = begin(sess, training, cluster, run, checkpoint, len(images), log)
        with run_outputs.writer_for(cluster, run, hparams, training, sess, images, step,
                                    checkpoint, log) as writer:
            evaluation = training_monitor.evaluation_for(run, hparams, cluster, log)
            first_step, started, by_other = step, time.monotonic(), False
            while step < run.max_steps:
                report = (step + 1) % run.log_every == 0 or step + 1 == run.max_steps
                wish = stop.signal is not None or time.monotonic() >= deadline
                fetched = train_step(sess, training, hparams, step, report, cluster, wish)
                step += 1
                if not finite(fetched):
                    raise diverged(step, fetched, writer.last_saved, hparams)
                writer.after_step(step, fetched, report, deadline)
                if step % run.sample_every == 0:
                    writer.write_samples(step)
                evaluate = evaluation.due(step)
                if step % run.ckpt_every == 0 or evaluate:
                    writer.save(step)
                if evaluate:  # after the save: the best checkpoint must exist on disk
                    evaluation(step, sess, training, writer.events)
                stop.announce_once(step, log, cluster.when_stopping())
                wish_now = stop.signal is not None or time.monotonic() >= deadline
                stop_now, by_other = cluster.stop_after(fetched, wish, wish_now)
                if stop_now:
                    break
            if step > first_step:
                writer.finish(step)
            cluster.after_training(sess, step, log)
    return ending(run, log, step, first_step, time.monotonic() - started, writer.last_saved,
                  stop.signal, by_other)


def train_step(sess, training, hparams, step, report, cluster, wish):
    """One iteration on the z batch of `step`, the same whenever it is asked for.

    The G update reuses the D update's z batch (as in the classic TF1
    DCGAN), and by default its G(z) too, in the same Session.run (see
    HParams.schedule); the D op advances the global step. `wish`: this worker wants the
    run to stop after this step (counted with several workers).

    Returns:
      the fetched values by name: d_loss, g_loss, d_real (mean D(x)),
      d_fake (mean D(G(z))), weights_finite; d_summary and g_summary on
      reporting steps; and what the workers' vote adds (stop_votes).
    """
    gan = training.gan
    vote_feed, vote_fetches = cluster.vote(wish)
    feed = {training.z: generate_face.train_z(hparams.seed, step,
                                              hparams.batch_size * cluster.layout.replicas,
                                              hparams.z_dim), **vote_feed}
    run = functools.partial(sess.run, feed_dict=feed, options=cluster.run_options)
    # (1) Update D: maximise log D(x) + log(1 - D(G(z))).
    d_step = {"d_train_op": training.d_train_op, "d_loss": gan.d_loss,
              "d_real": gan.d_real, "d_fake": gan.d_fake, **vote_fetches}
    # (2) Update G: maximise log D(G(z)), then check that every weight is finite.
    g_step = {"g_train_op": training.g_train_op, "g_loss": gan.g_loss,
              "weights_finite": training.weights_finite}
    if report:
        d_step["d_summary"], g_step["g_summary"] = training.d_summary, training.g_summary
    if hparams.schedule == "reuse_fake":  # both in one run: G(z) is computed once
        return run({**d_step, **g_step})
    fetched = run(d_step)
    for _ in range(hparams.g_steps - 1):
        run(training.g_train_op)
    return {**fetched, **run(g_step)}


def finite(fetched):
    """Both losses and every weight are finite."""
    return bool(np.isfinite(fetched["d_loss"]) and np.isfinite(fetched["g_loss"])
                and fetched["weights_finite"])


def diverged(step, fetched, last_saved, hparams):
    return TrainingDiverged(
        f"training diverged at step {step}: a loss or a weight became NaN or infinite "
        f"(d_loss {fetched['d_loss']}, g_loss {fetched['g_loss']}); nothing after the last "
        f"checkpoint ({last_saved}) was saved. Resume from it with a lower "
        f"--learning_rate, or let --nan_rollbacks do that", step, last_saved, hparams)


# ---------------------------------------------------------------------------
# Around the loop: the run's data and settings, its start and its end
# ---------------------------------------------------------------------------

def prepare(run, overrides, log, layout=replicas.Layout()):
    """Settle the hyperparameters, check the folders, load the faces.

    Returns:
      (HParams with the precision resolved, checkpoint to resume or None,
       uint8 images [N, H, W, 3]).
    """
    hparams, checkpoint, changes = gan_run.resolve_hparams(run.ckpt_dir, overrides or {})
    precision, reason, warning = hardware.resolve_precision(hparams.precision)
    hparams = dataclasses.replace(hparams, precision=precision)  # saved resolved
    if checkpoint:
        log(f"resuming from {checkpoint} (step {gan_run.step_of(checkpoint)})")
        for name, (old, new) in changes.items():
            log(f"  {name}: {old} -> {new}")
    else:
        log(f"new run in {run.ckpt_dir}, seed {hparams.seed}")
    log(f"precision {precision} ({reason})")
    if warning:
        log(warning)
    log(layout.describe())
    global_batch = hparams.batch_size * layout.replicas
    before = gan_run.read_run_file(run.ckpt_dir).replicas if checkpoint else layout.replicas
    if before != layout.replicas:
        log(f"  replicas: {before} -> {layout.replicas} (global batch "
            f"{hparams.batch_size * before} -> {global_batch} images; learning rates unchanged)")
    if layout.is_chief:  # the other workers write nothing into the run's folders
        for flag, folder in (("--ckpt_dir", run.ckpt_dir), ("--samples_dir", run.samples_dir),
                             ("--log_dir", run.log_dir)):
            run_outputs.ensure_writable_folder(folder, flag)
    images, kept, _ = generate_face.load_dataset(
        run.data_root, gan_run.preprocessing(hparams), run.cache_dir or None, log=log)
    if len(kept) < global_batch:
        folder = generate_face.printable(run.data_root)
        what = (f"one batch of {hparams.batch_size}" if layout.replicas == 1 else
                f"one global batch of {global_batch} ({hparams.batch_size} for each of "
                f"{layout.replicas} replicas)")
        raise ValueError(f"only {len(kept)} usable images in {folder}, fewer than {what}; "
                         f"add images or lower --batch_size")
    log(f"training on {len(kept)} images")
    return hparams, checkpoint, images


def begin(sess, training, cluster, run, checkpoint, num_images, log):
    """Restore the checkpoint (or initialise), and start the input at its step.

    Returns:
      (the step, the checkpoint restored or None).
    """
    cluster.check_agreement(sess, gan_run.step_of(checkpoint) if checkpoint else 0, num_images)
    if checkpoint:
        restored = gan_run.restore(
            sess, training.saver, training.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES),
            run.ckpt_dir, log=log)
        if restored != checkpoint:
            log(f"resumed from {restored} instead")
            checkpoint = restored
        # Let this Saver prune the older checkpoints of the run as well.
        training.saver.set_last_checkpoints_with_time(
            [(path, os.path.getmtime(path + ".index"))
             for path in reversed(gan_run.checkpoints_newest_first(run.ckpt_dir))])
    else:
        # With several workers, worker 0's initial values go to all.
        sess.run(training.init, options=cluster.run_options)
    step = int(sess.run(training.global_step))
    sess.run(training.iterator.initializer, {training.start_batch: step})
    if step >= run.max_steps:
        log(f"the run is at step {step}, already at --max_steps {run.max_steps}; raise "
            f"--max_steps to train further")
    return step, checkpoint


def ending(run, log, step, first_step, elapsed, last_saved, signal_number, by_other):
    """Say how the run ended; its TrainResult."""
    if step > first_step:
        log(f"trained steps {first_step}-{step} in {format_seconds(elapsed)} "
            f"({elapsed / (step - first_step):.3f} s/step)")
    out_of_time = step < run.max_steps and signal_number is None and not by_other
    if signal_number is not None:
        log(f"stopped by {signal.Signals(signal_number).name} at step {step}; "
            f"run the same command again to resume")
    elif by_other:
        log(f"stopped at step {step}: another worker was interrupted or reached its "
            f"--max_minutes; the chief saved a checkpoint")
    elif out_of_time:
        log(f"--max_minutes {run.max_minutes:g} reached at step {step}; run the same "
            f"command again to train further")
    return TrainResult(step, last_saved, signal_number, out_of_time, by_other)


def main(argv=None):
    run, overrides = parse_flags(argv)
    # TensorFlow's Python-side deprecation notices (e.g. from Saver's own
    # checkpoint pruning) are not actionable for a user of this script.
    tf.get_logger().setLevel("ERROR")
    try:
        result = train(run, overrides, log=lambda text: print(text, flush=True))
    except (FileNotFoundError, ValueError, TrainingDiverged, run_outputs.OutputError,
            replicas.WorkerLost) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 128 + result.stopped_by if result.stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
