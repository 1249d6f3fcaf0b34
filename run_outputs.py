"""What a training run writes: progress lines, TensorBoard events, sample
grids, checkpoints and hparams.json.

Only the chief (the one worker, or worker 0 of several) writes: it gets a
RunWriter; the other workers get a WorkerProgress, which only prints.
train_gan.py's loop calls either the same way.
"""

import contextlib
import os
import time
from pathlib import Path

import hardware  # noqa: F401  (first: it picks TensorFlow's CPU kernels before TensorFlow loads)
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp_api

import gan_run
import generate_face
import metrics
import training_monitor
from training_monitor import format_seconds, scalars

tf1 = tf.compat.v1


class OutputError(RuntimeError):
    """A checkpoint could not be written (disk full, folder gone)."""


def ensure_writable_folder(path, flag):
    """Create `path` if needed and check that files can be written in it.

    Raises:
      ValueError: naming the flag and the folder, before any work starts.
    """
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; pass another {flag}")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe = Path(path) / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{flag} {path} is not a writable folder "
                         f"({error.strerror or error})") from error


def run_log_dir(run):
    """The TensorBoard folder of a run: --log_dir/<run_name>."""
    return Path(run.log_dir) / (run.run_name or Path(run.ckpt_dir).resolve().name)


def hparams_summary(hparams, run, name):
    """The run's hyperparameters for TensorBoard's HParams dashboard.

    Serialized, since TensorBoard's Summary class is not TensorFlow's.
    """
    values = {**hparams.to_dict(), "data_root": generate_face.printable(run.data_root)}
    return hp_api.hparams_pb(values, trial_id=name).SerializeToString()


@contextlib.contextmanager
def writer_for(cluster, run, hparams, training, sess, images, step, checkpoint, log):
    """This worker's writer for the run: the chief's RunWriter, whose events
    are flushed at the end, or another worker's WorkerProgress.

    step, checkpoint: where the run starts, and the checkpoint it resumed.
    """
    if not cluster.is_chief:
        yield WorkerProgress(run, checkpoint, log)
        return
    writer = RunWriter(run, hparams, training, sess, images, step, checkpoint,
                       cluster.layout.replicas, log)
    with contextlib.closing(writer.events):
        yield writer


class RunWriter:
    """The chief's outputs: progress lines, TensorBoard events, sample grids,
    checkpoints and hparams.json.

    Attributes:
      last_saved: the newest checkpoint written, or the one the run resumed.
      events: the TensorBoard FileWriter.
    """

    def __init__(self, run, hparams, training, sess, images, step, checkpoint, replicas,
                 log):
        self.run, self.training, self.sess, self.log = run, training, sess, log
        self.last_saved = checkpoint
        self.images_per_step = hparams.batch_size * replicas
        # Also on resume: settings changed on the command line (a new
        # learning rate, say) stay in force when the run is resumed again.
        gan_run.write_run_file(run.ckpt_dir, hparams, replicas)
        log_dir = run_log_dir(run)
        self.events = tf1.summary.FileWriter(str(log_dir),
                                             graph=None if checkpoint else training.graph)
        if checkpoint:
            # TensorBoard drops the earlier files' events from this step on
            # (what the interrupted run logged after its last checkpoint), so
            # the resumed run neither duplicates nor restarts its steps.
            self.events.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), step + 1)
        self.events.add_summary(hparams_summary(hparams, run, log_dir.name), step)
        self.watchdog = (training_monitor.CollapseWatchdog.for_run(run.collapse_window, images,
                                                                   hparams.seed)
                         if run.collapse_window else None)
        self._window = (step, time.monotonic())  # (step, time) of the last report

    def after_step(self, step, fetched, report, deadline):
        """The watchdog's look at D's loss; on reporting steps, the summaries,
        the watchdog's look at the samples and the progress line."""
        if self.watchdog:
            self._warn(self.watchdog.observe_d_loss(step, fetched["d_loss"]))
        if not report:
            return
        now = time.monotonic()
        rate = (step - self._window[0]) / max(now - self._window[1], 1e-9)
        self._window = (step, now)
        for summary in (fetched["d_summary"], fetched["g_summary"]):
            self.events.add_summary(summary, step)
        self.events.add_summary(scalars({"perf/images_per_sec": rate * self.images_per_step}),
                                step)
        if self.watchdog:
            variety = metrics.diversity(generate_face.to_uint8(
                self.sess.run(self.training.samples)))
            ratio, warning = self.watchdog.observe_samples(step, variety)
            self.events.add_summary(scalars({"watchdog/sample_diversity": ratio}), step)
            self._warn(warning)
        # Until --max_steps, or the --max_minutes limit if that comes first.
        left = min((self.run.max_steps - step) / max(rate, 1e-9), max(deadline - now, 0))
        self.log(f"step {step}/{self.run.max_steps}  d_loss {fetched['d_loss']:.3f}  g_loss "
                 f"{fetched['g_loss']:.3f}  D(x) {fetched['d_real']:.3f}  D(G(z)) "
                 f"{fetched['d_fake']:.3f}  {rate * self.images_per_step:.1f} img/s  "
                 f"ETA {format_seconds(left)}")

    def _warn(self, warning):
        if warning:
            self.log(warning)

    def write_samples(self, step):
        """The fixed-z grid: a PNG, and an image summary with the weights' histograms."""
        pictures, summary = self.sess.run([self.training.samples,
                                           self.training.samples_summary])
        self.events.add_summary(summary, step)
        path = Path(self.run.samples_dir) / f"train_{step:06d}.png"
        try:
            generate_face.save_grid(pictures, path)
        except OSError as error:  # a picture is not worth stopping a run for
            self.log(f"warning: could not write {path} ({error}); training goes on")
            return
        self.log(f"wrote {path}")

    def save(self, step):
        """A checkpoint of this step; OutputError if it cannot be written."""
        prefix = str(Path(self.run.ckpt_dir) / gan_run.CKPT_PREFIX)
        try:
            path = self.training.saver.save(self.sess, prefix, global_step=step,
                                            write_meta_graph=False)
        except (OSError, tf.errors.OpError) as error:
            # The Saver writes to temporary names and renames, so the
            # checkpoints already there are untouched.
            raise OutputError(
                f"could not write a checkpoint to {self.run.ckpt_dir} at step {step} "
                f"({getattr(error, 'message', error)}); the last good checkpoint "
                f"({self.last_saved}) is intact. Free space or fix the folder, then run the "
                f"same command to resume") from error
        self.log(f"saved {path}")
        self.last_saved = path

    def finish(self, step):
        """The last grid and checkpoint, unless this step already has them."""
        if step % self.run.sample_every != 0:
            self.write_samples(step)
        if self.last_saved is None or gan_run.step_of(self.last_saved) != step:
            self.save(step)


class WorkerProgress:
    """What a worker other than the chief writes: progress lines, nothing on disk."""
    events = None

    def __init__(self, run, checkpoint, log):
        self.run, self.last_saved, self.log = run, checkpoint, log

    def after_step(self, step, fetched, report, deadline):
        if report:
            self.log(f"step {step}/{self.run.max_steps}  d_loss {fetched['d_loss']:.3f}  "
                     f"g_loss {fetched['g_loss']:.3f}")

    def write_samples(self, step):
        pass

    def save(self, step):
        pass

    def finish(self, step):
        pass
