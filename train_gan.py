"""Train the DCGAN on a folder of face photos.

    python train_gan.py --data_root data/demo_faces --max_steps 2000

Checkpoints go to --ckpt_dir (with hparams.json), 8x8 grids from a z fixed
for the run to --samples_dir, TensorBoard logs to --log_dir. Running the same
command again resumes from the newest checkpoint; Ctrl-C or SIGTERM saves a
checkpoint and exits.

--devices trains on several GPUs (or logical CPU devices) of one machine;
TF_CONFIG naming several workers spreads a run over machines (replicas.py).
"""

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp_api

import gan_run
import generate_face
import metrics
import replicas
from cli_flags import add_flags, below, flag_field
from gan_model import (GanOutputs, HParams, finite_or_zero, ganModel, images_from_uint8,
                       images_to_uint8, tile_images)

tf1 = tf.compat.v1

SAMPLE_GRID = (8, 8)  # rows, columns of the training sample grids


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run reads and writes, how long it runs, how often it reports."""
    data_root: str = flag_field("data/demo_faces", "folder of face images (searched recursively)")
    ckpt_dir: str = flag_field("ckpt", "checkpoints and hparams.json; a run resumes from here")
    samples_dir: str = flag_field("samples", "sample grids train_<step>.png")
    log_dir: str = flag_field("logs", "TensorBoard logs, one folder per run")
    run_name: str = flag_field("", "name of the run in TensorBoard; its logs go to "
                                   "--log_dir/<run_name> (default: --ckpt_dir's folder name)")
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
        argument_default=argparse.SUPPRESS)
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


def resolve_hparams(ckpt_dir, overrides):
    """The hyperparameters of this run and the checkpoint it resumes from.

    A fresh run takes the defaults plus the flags given. A run whose
    ckpt_dir holds a checkpoint restores the saved hyperparameters; flags
    given again may change training settings, but not the architecture.

    Returns:
      (HParams, checkpoint path or None, {name: (saved, new)} of changes)
    """
    checkpoint = gan_run.latest_checkpoint(ckpt_dir)
    if checkpoint is None:
        return dataclasses.replace(HParams(), **overrides).validate(), None, {}
    saved = gan_run.load_hparams(ckpt_dir)
    wanted = dataclasses.replace(saved, **overrides).validate()
    clashes = saved.architecture_differences(wanted)
    if clashes:
        listed = ", ".join(f"--{name} {new} (checkpoint has {old})"
                           for name, old, new in clashes)
        raise ValueError(
            f"{ckpt_dir} holds a run with a different architecture: {listed}. "
            f"Drop these flags to resume it, or pass another --ckpt_dir to start a new run")
    changes = {name: (getattr(saved, name), getattr(wanted, name))
               for name in overrides if getattr(saved, name) != getattr(wanted, name)}
    return wanted, checkpoint, changes


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class StopRequest:
    """Turns SIGINT and SIGTERM into a flag the loop checks after each step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous = {}

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


class CollapseWatchdog:
    """Spots the two usual GAN failures while a run trains, and says so.

    D's loss staying near 0 means D wins and G's gradient vanishes; fixed-z
    samples that stay much less varied than real faces mean G draws one
    face (mode collapse). Either must last `window` steps, counted only
    after the first `window` steps of the run, when an untrained G's grey
    pictures and an early D lead are normal.
    """

    D_LOSS_FLOOR = 0.05

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
            "variety", self._low_variety_since, step, ratio < generate_face.COLLAPSE_RATIO)
        if due:
            return ratio, (f"warning: possible mode collapse at step {step}: the fixed-z "
                           f"samples have been less than {generate_face.COLLAPSE_RATIO:.0%} "
                           f"as varied as real faces for {self.window} steps (now "
                           f"{ratio:.0%}); look at the sample grids")
        return ratio, None


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


def scalars(values):
    """A TensorBoard Summary of {tag: number}."""
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)
                              for tag, value in values.items()])


def format_seconds(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclasses.dataclass
class TrainResult:
    step: int                 # global step reached
    checkpoint: str           # newest checkpoint written or restored
    stopped_by: int = None    # signal number if interrupted, else None
    out_of_time: bool = False  # stopped by --max_minutes
    stopped_by_other_worker: bool = False  # another worker's signal or time limit


class WorkerLost(RuntimeError):
    """With several workers, one stopped answering; this one stopped too."""


def build_input(images, hparams, layout=replicas.Layout()):
    """A tf.data iterator over this worker's part of the run's batch stream,
    uint8 in the graph.

    Every global batch holds --batch_size images for each replica of the
    run, in replica order; this worker reads its own replicas' rows. With
    one replica that is the whole stream of the single-device run.

    Returns (iterator, start_batch): initialise the iterator feeding
    `start_batch` the number of batches already trained on (the resumed
    step), and the stream continues exactly where that run left it.
    """
    rows = hparams.batch_size * layout.local_replicas
    first = hparams.batch_size * layout.first_replica

    def batches(start_batch):
        yield from generate_face.BatchStream(
            images, hparams.batch_size * layout.replicas, hparams.seed,
            start_batch=int(start_batch), flip=hparams.flip, part=slice(first, first + rows))

    start_batch = tf1.placeholder(tf.int64, [], name="start_batch")
    shape = [rows, hparams.output_h, hparams.output_w, 3]
    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec(shape, tf.uint8), args=(start_batch,))
    return tf1.data.make_initializable_iterator(dataset.prefetch(4)), start_batch


@dataclasses.dataclass
class TrainingParts:
    """Everything the training loop runs (see build_training_graph)."""
    graph: tf.Graph
    layout: replicas.Layout
    strategy: object          # the tf.distribute strategy the graph was built in
    iterator: object          # tf.data iterator over uint8 batches
    start_batch: tf.Tensor    # int64 placeholder fed when the iterator is initialised
    z: tf.Tensor              # placeholder [replicas * batch_size, z_dim]: the global batch's
    gan: object               # gan_model.GanOutputs, averaged over the replicas
    d_summary: tf.Tensor      # merged summaries fetched with the D step
    g_summary: tf.Tensor      # merged summaries fetched with the G step
    global_step: tf.Variable
    d_train_op: tf.Operation
    g_train_op: tf.Operation
    samples: tf.Tensor        # 8x8 sample batch from the fixed z, inference mode
    samples_summary: tf.Tensor
    saver: tf1.train.Saver
    init: tf.Operation
    weights_finite: tf.Tensor  # bool, after the G step: no weight is NaN or infinite
    # Several workers only (else None): a worker's wish to stop after this
    # step, fed with the D step, and the number of workers wishing so; and
    # the facts every worker must agree on before training.
    stop_wish: tf.Tensor = None
    stop_votes: tf.Tensor = None
    worker_facts: tf.Tensor = None
    facts_moments: dict = None  # {"mean", "square"}: the facts' first two moments
    # The evaluation's generator: z [N, z_dim] -> uint8 faces, inference
    # mode, on G's moving average when the run keeps one.
    eval_z: tf.Tensor = None
    eval_faces: tf.Tensor = None
    best_saver: tf1.train.Saver = None  # keeps the best-scoring checkpoint, in <ckpt_dir>/best


# GanOutputs fields of one number per replica that the D step reports; with
# several replicas, their mean over all replicas (G's loss is averaged apart).
D_STEP_MEANS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real", "d_fake")


def build_training_graph(hparams, images, keep_checkpoints=5, layout=replicas.Layout()):
    """The whole training graph over `images` (uint8 [N, H, W, 3]), finalized.

    The networks, their losses and Adam updates are built once per replica
    (see replicas.py); with one replica, the single-device graph.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(hparams.seed)
        strategy = replicas.make_strategy(layout)
        with strategy.scope():
            parts = _build_replicated(hparams, layout, strategy, images, graph)
            # Built last, so that it saves the optimizers' slots and the step too.
            parts.saver = tf1.train.Saver(max_to_keep=keep_checkpoints,
                                          save_relative_paths=True)
            parts.best_saver = tf1.train.Saver(max_to_keep=1, save_relative_paths=True)
            parts.init = tf1.global_variables_initializer()
    graph.finalize()  # the loop must not grow the graph
    return parts


def _build_replicated(hparams, layout, strategy, images, graph):
    """build_training_graph's body, inside the strategy's scope."""
    iterator, start_batch = build_input(images, hparams, layout)
    worker_batch = iterator.get_next()
    z = tf1.placeholder(tf.float32, [hparams.batch_size * layout.replicas, hparams.z_dim],
                        name="z")
    global_step = tf1.train.get_or_create_global_step()
    several_workers = layout.num_workers > 1
    stop_wish = tf1.placeholder_with_default(0.0, [], "stop_wish") if several_workers else None
    network_names = set()  # of both networks' variables, as the model defines them

    def replica_step():
        """One replica's share of a step: its rows of the batch, its networks' ops."""
        model = ganModel(hparams)
        real_images = images_from_uint8(replicas.replica_rows(
            worker_batch, hparams.batch_size, layout.first_replica))
        replica_z = replicas.replica_rows(z, hparams.batch_size)
        gan = model.build_model(real_images, replica_z)
        d_train_op, g_train_op = model.optimizers(gan, global_step, layout.replicas)
        network_names.update(variable_name(v) for scope in model.network_variables().values()
                             for v in scope)
        fields = {field.name: getattr(gan, field.name) for field in dataclasses.fields(gan)}
        wish = tf.identity(stop_wish) if several_workers else None
        return d_train_op, g_train_op, fields, replica_z, wish

    d_ops, g_ops, fields, zs, wishes = strategy.extended.call_for_each_replica(replica_step)
    d_train_op, g_train_op = strategy.group(d_ops), strategy.group(g_ops)
    gan = GanOutputs(**replicas.first_replica_value(strategy, fields))
    if layout.replicas > 1:
        # Reported and summarised: the mean over all replicas. Two groups,
        # because the D step must not compute G's loss after G's update nor
        # the G step read another real batch.
        gan = dataclasses.replace(
            gan, **replicas.mean_over_replicas(strategy, {n: fields[n] for n in D_STEP_MEANS}),
            **replicas.mean_over_replicas(strategy, {"g_loss": fields["g_loss"]}))
    model = ganModel(hparams)  # the variables exist: this one only reads them
    d_summary, g_summary = model.summaries(gan, replicas.first_replica_value(strategy, zs))

    # The fixed sample z is a variable, so every checkpoint carries it and
    # grids stay comparable across resumes.
    rows, cols = SAMPLE_GRID
    sample_z = tf1.get_variable(
        "sample_z", initializer=generate_face.sample_grid_z(
            hparams.seed, rows * cols, hparams.z_dim), trainable=False)
    samples = model.generator(sample_z, is_training=False, use_ema=hparams.uses_ema)
    # Written on sample steps only: the grid, and every layer's weights.
    samples_summary = tf1.summary.merge(
        [tf1.summary.image("samples", tile_images(samples, rows, cols))]
        + [tf1.summary.histogram(f"weights/{variable_name(v)}", finite_or_zero(v))
           for v in tf1.trainable_variables() if variable_name(v).endswith("/w")])

    eval_z = tf1.placeholder(tf.float32, [None, hparams.z_dim], name="eval_z")
    eval_faces = images_to_uint8(model.generator(eval_z, is_training=False,
                                                 use_ema=hparams.uses_ema))

    # A NaN gradient can poison weights while the losses stay finite (a
    # ReLU turns NaN into 0 on the way forward), so the weights and
    # batch-norm statistics of both networks are checked too, once the G
    # step has run: fetch this only together with g_train_op. (Adam's
    # slots and G's averages only turn NaN through the weights.)
    networks = [v for v in tf1.global_variables() if variable_name(v) in network_names]
    with tf.control_dependencies([g_train_op]):
        weights_finite = tf.reduce_all(tf.stack(
            [tf.reduce_all(tf.math.is_finite(v)) for v in networks]))

    worker_facts = facts_moments = stop_votes = None
    if several_workers:
        stop_votes = strategy.reduce(tf.distribute.ReduceOp.SUM, wishes, axis=None)
        # Before any variable is touched, the workers compare what they found
        # on disk: the step they resume from and how many faces they read.
        worker_facts = tf1.placeholder(tf.float64, [2], "worker_facts")
        facts_moments = replicas.mean_over_replicas(strategy, {
            "mean": strategy.extended.call_for_each_replica(lambda: worker_facts),
            "square": strategy.extended.call_for_each_replica(lambda: worker_facts ** 2)})
    return TrainingParts(graph, layout, strategy, iterator, start_batch, z, gan, d_summary,
                         g_summary, global_step, d_train_op, g_train_op, samples,
                         samples_summary, None, None, weights_finite, stop_wish, stop_votes,
                         worker_facts, facts_moments, eval_z=eval_z, eval_faces=eval_faces)


def variable_name(variable):
    """A variable's name without ":0", the same for every replica's copy."""
    return variable.name.rsplit(":", 1)[0]


def run_log_dir(run):
    """The TensorBoard folder of a run: --log_dir/<run_name>."""
    return Path(run.log_dir) / (run.run_name or Path(run.ckpt_dir).resolve().name)


def hparams_summary(hparams, run, name):
    """The run's hyperparameters for TensorBoard's HParams dashboard.

    Serialized, since TensorBoard's Summary class is not TensorFlow's.
    """
    values = {**hparams.to_dict(), "data_root": generate_face.printable(run.data_root)}
    return hp_api.hparams_pb(values, trial_id=name).SerializeToString()


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


def prepare(run, overrides, log, layout=replicas.Layout()):
    """Settle the hyperparameters, check the folders, load the faces.

    Returns:
      (HParams with the precision resolved, checkpoint to resume or None,
       uint8 images [N, H, W, 3]).
    """
    hparams, checkpoint, changes = resolve_hparams(run.ckpt_dir, overrides or {})
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
    before = gan_run.saved_replicas(run.ckpt_dir) if checkpoint else layout.replicas
    if before != layout.replicas:
        log(f"  replicas: {before} -> {layout.replicas} (global batch "
            f"{hparams.batch_size * before} -> {global_batch} images; learning rates unchanged)")
    if layout.is_chief:  # the other workers write nothing into the run's folders
        for flag, folder in (("--ckpt_dir", run.ckpt_dir), ("--samples_dir", run.samples_dir),
                             ("--log_dir", run.log_dir)):
            ensure_writable_folder(folder, flag)
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


@dataclasses.dataclass
class StepOutput:
    """What one training step reports (losses averaged over the replicas)."""
    d_loss: float
    g_loss: float
    d_real: float             # mean D(x)
    d_fake: float             # mean D(G(z))
    weights_finite: bool
    summaries: list           # serialized summaries, on reporting steps only
    stop_votes: float = 0.0   # workers that asked to stop after this step

    @property
    def finite(self):
        return bool(np.isfinite(self.d_loss) and np.isfinite(self.g_loss)
                    and self.weights_finite)


class Trainer:
    """A run in a live Session: the training step and the periodic work around it.

    Holds the Session, the TensorBoard writer and the run's position (`step`,
    `last_saved`); `train_once` drives it. Only the chief (the one worker,
    or worker 0 of several) writes: checkpoints, grids, events, hparams.json.
    """

    def __init__(self, run, hparams, parts, sess, checkpoint, images, log):
        self.run, self.hparams, self.parts, self.sess, self.log = run, hparams, parts, sess, log
        self.layout = layout = parts.layout
        self.is_chief = layout.is_chief
        # With several workers every Session.run is bounded, so that a worker
        # that is gone stops the others instead of leaving them waiting.
        self.run_options = (tf1.RunOptions(timeout_in_ms=int(run.worker_timeout * 1000))
                            if layout.num_workers > 1 else None)
        if parts.worker_facts is not None:
            self._check_workers_agree(checkpoint, len(images))
        if checkpoint:
            restored = gan_run.restore(
                sess, parts.saver, parts.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES),
                run.ckpt_dir, log=log)
            if restored != checkpoint:
                log(f"resumed from {restored} instead")
                checkpoint = restored
            # Let this Saver prune the older checkpoints of the run as well.
            parts.saver.set_last_checkpoints_with_time(
                [(path, os.path.getmtime(path + ".index"))
                 for path in reversed(gan_run.checkpoints_newest_first(run.ckpt_dir))])
        else:
            # With several workers, worker 0's initial values go to all.
            sess.run(parts.init, options=self.run_options)
        self.step = int(sess.run(parts.global_step))
        self.last_saved = checkpoint
        sess.run(parts.iterator.initializer, {parts.start_batch: self.step})
        self.writer = self.watchdog = None
        self.evaluation = NoEvaluation()
        if not self.is_chief:
            return
        # Also on resume: settings changed on the command line (a new
        # learning rate, say) stay in force when the run is resumed again.
        gan_run.save_hparams(run.ckpt_dir, hparams, layout.replicas)

        log_dir = run_log_dir(run)
        self.writer = tf1.summary.FileWriter(str(log_dir),
                                             graph=None if checkpoint else parts.graph)
        if checkpoint:
            # TensorBoard drops the earlier files' events from this step on
            # (what the interrupted run logged after its last checkpoint), so
            # the resumed run neither duplicates nor restarts its steps.
            self.writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START),
                                        self.step + 1)
        self.writer.add_summary(hparams_summary(hparams, run, log_dir.name), self.step)

        if run.collapse_window:
            # The real faces' own variety is the yardstick of the samples'.
            rng = generate_face.run_rng(hparams.seed, generate_face.STREAM_WATCHDOG)
            picked = np.sort(rng.permutation(len(images))[:generate_face.DIVERSITY_IMAGES])
            self.watchdog = CollapseWatchdog(run.collapse_window,
                                             generate_face.diversity(images[picked]))
        if run.eval_real_dir:
            self.evaluation = Evaluation(run, hparams, log)
        self._window = (self.step, time.monotonic())  # (step, time) of the last report

    def _check_workers_agree(self, checkpoint, num_images):
        """Every worker must resume from the same step and read as many faces;
        else their weights or batches would silently differ."""
        mine = [gan_run.step_of(checkpoint) if checkpoint else 0, num_images]
        moments = self.sess.run(self.parts.facts_moments, {self.parts.worker_facts: mine},
                                options=self.run_options)
        # A fact's variance over the replicas is 0 exactly when all agree.
        spread = moments["square"] - moments["mean"] ** 2
        problems = []
        if spread[0] > 0:
            problems.append(f"they resume from different steps (this one from {mine[0]}): "
                            f"--ckpt_dir must be one folder that every machine reads, "
                            f"such as a shared file system")
        if spread[1] > 0:
            problems.append(f"they read different numbers of faces (this one {mine[1]}): "
                            f"--data_root must hold the same faces on every machine")
        if problems:
            raise ValueError("the workers disagree: " + "; ".join(problems))

    def train_step(self, report, stop_wish=False):
        """One iteration on the z batch of this step; advances `step`.

        The G updates reuse the D update's z batch (as in the classic TF1
        DCGAN); the D op advances the global step. `stop_wish`: this worker
        wants the run to stop after this step (counted with several workers).
        """
        parts, gan, hp = self.parts, self.parts.gan, self.hparams
        feed = {parts.z: generate_face.train_z(hp.seed, self.step,
                                               hp.batch_size * self.layout.replicas, hp.z_dim)}
        # (1) Update D: maximise log D(x) + log(1 - D(G(z))).
        d_fetch = [parts.d_train_op, gan.d_loss, gan.d_real, gan.d_fake]
        if parts.stop_votes is not None:
            feed[parts.stop_wish] = float(stop_wish)
            d_fetch.append(parts.stop_votes)
        d_fetch += [parts.d_summary] * report
        # (2) Update G: maximise log D(G(z)), then check every weight is finite.
        g_fetch = [parts.g_train_op, gan.g_loss, parts.weights_finite]
        g_fetch += [parts.g_summary] * report
        run = functools.partial(self.sess.run, feed_dict=feed, options=self.run_options)
        if hp.schedule == "reuse_fake":  # both in one run: G(z) is computed once
            both = run(d_fetch + g_fetch)
            d_out, g_out = both[:len(d_fetch)], both[len(d_fetch):]
        else:
            d_out = run(d_fetch)
            for _ in range(hp.g_steps - 1):
                run(parts.g_train_op)
            g_out = run(g_fetch)
        self.step += 1
        votes = d_out.pop(4) if parts.stop_votes is not None else 0.0
        return StepOutput(d_out[1], g_out[1], d_out[2], d_out[3], bool(g_out[2]),
                          d_out[4:] + g_out[3:], votes)

    def diverged(self, out):
        return TrainingDiverged(
            f"training diverged at step {self.step}: a loss or a weight became NaN or "
            f"infinite (d_loss {out.d_loss}, g_loss {out.g_loss}); nothing after the last "
            f"checkpoint ({self.last_saved}) was saved. Resume from it with a lower "
            f"--learning_rate, or let --nan_rollbacks do that",
            self.step, self.last_saved, self.hparams)

    def weights_digest(self):
        """A short hash of both networks' weights, for comparing workers' copies."""
        digest = hashlib.sha1()
        networks = [v for v in self.parts.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                    if variable_name(v).startswith(gan_run.NETWORK_SCOPES)]
        for variable, value in sorted(zip(map(variable_name, networks),
                                          self.sess.run(networks))):
            digest.update(variable.encode() + np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()[:16]

    def report(self, out, deadline):
        """Summaries, the watchdog's sample check and the progress line."""
        step, hp, run = self.step, self.hparams, self.run
        now = time.monotonic()
        rate = (step - self._window[0]) / max(now - self._window[1], 1e-9)
        self._window = (step, now)
        images_per_sec = rate * hp.batch_size * self.layout.replicas
        for summary in out.summaries:
            self.writer.add_summary(summary, step)
        self.writer.add_summary(scalars({"perf/images_per_sec": images_per_sec}), step)
        if self.watchdog:
            variety = generate_face.diversity(
                generate_face.to_uint8(self.sess.run(self.parts.samples)))
            ratio, warning = self.watchdog.observe_samples(step, variety)
            self.writer.add_summary(scalars({"watchdog/sample_diversity": ratio}), step)
            if warning:
                self.log(warning)
        # Until --max_steps, or the --max_minutes limit if that comes first.
        left = min((run.max_steps - step) / max(rate, 1e-9), max(deadline - now, 0))
        self.log(f"step {step}/{run.max_steps}  d_loss {out.d_loss:.3f}  g_loss "
                 f"{out.g_loss:.3f}  D(x) {out.d_real:.3f}  D(G(z)) {out.d_fake:.3f}  "
                 f"{images_per_sec:.1f} img/s  ETA {format_seconds(left)}")

    def write_samples(self):
        """The fixed-z grid: a PNG, and an image summary with the weights' histograms."""
        pictures, summary = self.sess.run([self.parts.samples, self.parts.samples_summary])
        self.writer.add_summary(summary, self.step)
        path = Path(self.run.samples_dir) / f"train_{self.step:06d}.png"
        try:
            generate_face.save_grid(pictures, path)
        except OSError as error:  # a picture is not worth stopping a run for
            self.log(f"warning: could not write {path} ({error}); training goes on")
            return
        self.log(f"wrote {path}")

    def save(self):
        """A checkpoint of this step; OutputError if it cannot be written."""
        prefix = str(Path(self.run.ckpt_dir) / gan_run.CKPT_PREFIX)
        try:
            path = self.parts.saver.save(self.sess, prefix, global_step=self.step,
                                         write_meta_graph=False)
        except (OSError, tf.errors.OpError) as error:
            # The Saver writes to temporary names and renames, so the
            # checkpoints already there are untouched.
            raise OutputError(
                f"could not write a checkpoint to {self.run.ckpt_dir} at step {self.step} "
                f"({getattr(error, 'message', error)}); the last good checkpoint "
                f"({self.last_saved}) is intact. Free space or fix the folder, then run the "
                f"same command to resume") from error
        self.log(f"saved {path}")
        self.last_saved = path

    def periodic_work(self, out, report, deadline):
        """What follows a finished step: watchdog, report, grid, checkpoint (the
        chief's; the other workers only print progress)."""
        if not self.is_chief:
            if report:
                self.log(f"step {self.step}/{self.run.max_steps}  d_loss {out.d_loss:.3f}  "
                         f"g_loss {out.g_loss:.3f}")
            return
        if self.watchdog:
            warning = self.watchdog.observe_d_loss(self.step, out.d_loss)
            if warning:
                self.log(warning)
        if report:
            self.report(out, deadline)
        if self.step % self.run.sample_every == 0:
            self.write_samples()
        evaluate = self.evaluation.due(self.step)
        if self.step % self.run.ckpt_every == 0 or evaluate:
            self.save()
        if evaluate:  # after the save: the best checkpoint must exist on disk
            self.evaluation(self)

    def finish(self):
        """The last grid and checkpoint, unless this step already has them."""
        if not self.is_chief:
            return
        if self.step % self.run.sample_every != 0:
            self.write_samples()
        if self.last_saved is None or gan_run.step_of(self.last_saved) != self.step:
            self.save()


# ---------------------------------------------------------------------------
# Evaluation during training
# ---------------------------------------------------------------------------

BEST_DIR = "best"             # <ckpt_dir>/best: the best-scoring checkpoint, as a run folder
BEST_SCORES = "scores.json"   # in BEST_DIR: its step and scores
EVAL_BATCH = 250              # faces generated per Session.run


class NoEvaluation:
    """The evaluation seam without --eval_real_dir: never due."""

    def due(self, step):
        return False

    def __call__(self, trainer):
        pass


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

    def __init__(self, run, hparams, log):
        started = time.monotonic()
        self.run, self.hparams, self.log = run, hparams, log
        real = generate_face.sample_faces(run.eval_real_dir, gan_run.preprocessing(hparams),
                                          run.eval_num_images, 0, log)
        features = None
        try:
            import inception  # TensorFlow is loaded already; the weights only here
            features = inception.InceptionFeatures(session_config=hardware.session_config())
        except FileNotFoundError as error:
            log(f"warning: {error}; the evaluation scores SWD alone")
        self.metric = "kid" if features else "swd"
        self.scorer = metrics.FaceScorer(real, features)
        self.z = generate_face.sample_z(generate_face.run_rng(0, generate_face.STREAM_FAKE_Z),
                                        run.eval_num_images, hparams.z_dim)
        self.best = read_best(run.ckpt_dir)
        if self.best and self.best.get("metric") != self.metric:
            self.best = None  # scored by another metric: not comparable
        self.best_folder = Path(run.ckpt_dir) / BEST_DIR
        self._best_pruning_known = False
        self.since = time.monotonic()  # the end of the last evaluation
        log(f"evaluation every {run.eval_every} steps: {self.metric.upper()} decides the best "
            f"checkpoint; {len(real)} real faces ready in "
            f"{format_seconds(self.since - started)}")

    def due(self, step):
        return step % self.run.eval_every == 0

    def __call__(self, trainer):
        """Score the generator of trainer's step (whose checkpoint is saved)."""
        started = time.monotonic()
        training_seconds = started - self.since
        try:
            fake = np.concatenate([
                trainer.sess.run(trainer.parts.eval_faces,
                                 {trainer.parts.eval_z: self.z[i:i + EVAL_BATCH]})
                for i in range(0, len(self.z), EVAL_BATCH)])
            scores = self.scorer(fake)
            seconds = time.monotonic() - started
            trainer.writer.add_summary(scalars(
                {**{f"eval/{name}": value for name, value in scores.items()},
                 "eval/seconds": seconds}), trainer.step)
            improved = self.best is None or scores[self.metric] < self.best[self.metric]
            if improved:
                self.keep_best(trainer, scores)
        except Exception as error:  # noqa: BLE001  an evaluation must never cost the run
            self.log(f"warning: the evaluation at step {trainer.step} failed "
                     f"({type(error).__name__}: {error}); training goes on")
            return
        finally:
            self.since = time.monotonic()
        shown = []
        if "kid" in scores:
            shown += [f"KID x1e3 {1e3 * scores['kid']:.2f} +- {1e3 * scores['kid_std']:.2f}",
                      f"FID {scores['fid']:.2f}"]
        shown.append(f"SWD {scores['swd']:.2f}" + ("  (best so far)" if improved else ""))
        self.log(f"evaluation at step {trainer.step}: {'  '.join(shown)}; took "
                 f"{format_seconds(seconds)}, {100 * seconds / max(training_seconds, 1e-9):.0f}% "
                 f"of the {format_seconds(training_seconds)} since the last")

    def keep_best(self, trainer, scores):
        """Save this step's checkpoint into <ckpt_dir>/best (replacing the
        older best), then its scores: they never name a missing checkpoint."""
        self.best_folder.mkdir(exist_ok=True)
        saver = trainer.parts.best_saver
        if not self._best_pruning_known:  # a resumed run replaces its earlier best too
            saver.set_last_checkpoints_with_time(
                [(path, os.path.getmtime(path + ".index"))
                 for path in reversed(gan_run.checkpoints_newest_first(self.best_folder))])
            self._best_pruning_known = True
        path = saver.save(trainer.sess, str(self.best_folder / gan_run.CKPT_PREFIX),
                          global_step=trainer.step, write_meta_graph=False)
        gan_run.save_hparams(self.best_folder, self.hparams, trainer.layout.replicas)
        self.best = {"step": trainer.step, "checkpoint": path, "metric": self.metric, **scores}
        with generate_face.atomic_path(self.best_folder / BEST_SCORES) as temporary:
            temporary.write_text(json.dumps(self.best, indent=2) + "\n")


def worker_lost(run, layout, error, step=None):
    """WorkerLost for a Session.run that failed with several workers."""
    gone = replicas.unreachable_workers(layout)
    if gone:
        what = ", ".join(f"worker {index} ({address})" for index, address in gone)
        what += " stopped answering"
    else:
        what = (f"the other workers did not answer within --worker_timeout "
                f"{run.worker_timeout:g} s")
    when = f"at step {step + 1}" if step is not None else "while the workers were starting"
    return WorkerLost(
        f"{what} {when} ({type(error).__name__}); this worker stops too. Start the same "
        f"command again on every machine: the run resumes from the chief's last checkpoint "
        f"in {run.ckpt_dir}")


@contextlib.contextmanager
def training_session(parts):
    """A Session for the training graph: local, or on this worker's server
    when the run spans several workers."""
    config = replicas.session_config(parts.layout, parts.strategy)
    target = ""
    if parts.layout.num_workers > 1:
        target = replicas.worker_server(parts.layout, config).target
    with tf1.Session(target, graph=parts.graph, config=config) as sess:
        yield sess


def train_once(run, overrides, log, deadline=math.inf):
    """One attempt of `train`: raises TrainingDiverged on a non-finite loss.

    Training stops cleanly (checkpoint, grid) at the first step that ends
    after `deadline` (a time.monotonic() value). With several workers, a
    stop that one asks for (signal, time limit) takes effect on all after
    the same step.
    """
    layout = replicas.plan(run.devices)
    several_workers = layout.num_workers > 1
    hparams, checkpoint, images = prepare(run, overrides, log, layout)
    parts = build_training_graph(hparams, images, run.keep_checkpoints, layout)
    stopped_by_other_worker, signal_logged, trainer = False, False, None
    with training_session(parts) as sess, StopRequest() as stop:
        try:
            trainer = Trainer(run, hparams, parts, sess, checkpoint, images, log)
            first_step, started = trainer.step, time.monotonic()
            if first_step >= run.max_steps:
                log(f"the run is at step {first_step}, already at --max_steps "
                    f"{run.max_steps}; raise --max_steps to train further")
            with (contextlib.closing(trainer.writer) if trainer.writer
                  else contextlib.nullcontext()):
                # At least one step, so that even a limit shorter than the setup
                # leaves a checkpoint of this run behind.
                while trainer.step < run.max_steps:
                    next_step = trainer.step + 1
                    report = next_step % run.log_every == 0 or next_step == run.max_steps
                    wish = stop.signal is not None or time.monotonic() >= deadline
                    out = trainer.train_step(report, wish)
                    if not out.finite:
                        raise trainer.diverged(out)
                    trainer.periodic_work(out, report, deadline)
                    if stop.signal is not None and not signal_logged:
                        signal_logged = True
                        log(f"{signal.Signals(stop.signal).name} received: step "
                            f"{trainer.step} is done, "
                            + ("stopping every worker after the next step" if several_workers
                               else "saving a checkpoint"))
                    if several_workers:  # every worker counts the same votes
                        if out.stop_votes > 0:
                            stopped_by_other_worker = not wish
                            break
                    elif stop.signal is not None or time.monotonic() >= deadline:
                        break
                if trainer.step > first_step:
                    trainer.finish()
                if several_workers:
                    log(f"weights digest {trainer.weights_digest()} at step {trainer.step}")
        except tf.errors.OpError as error:
            if not several_workers:
                raise
            raise worker_lost(run, layout, error, trainer and trainer.step) from error
    step, elapsed = trainer.step, time.monotonic() - started
    if step > first_step:
        log(f"trained steps {first_step}-{step} in {format_seconds(elapsed)} "
            f"({elapsed / (step - first_step):.3f} s/step)")
    out_of_time = step < run.max_steps and stop.signal is None and not stopped_by_other_worker
    if stop.signal is not None:
        log(f"stopped by {signal.Signals(stop.signal).name} at step {step}; "
            f"run the same command again to resume")
    elif stopped_by_other_worker:
        log(f"stopped at step {step}: another worker was interrupted or reached its "
            f"--max_minutes; the chief saved a checkpoint")
    elif out_of_time:
        log(f"--max_minutes {run.max_minutes:g} reached at step {step}; run the same "
            f"command again to train further")
    return TrainResult(step, trainer.last_saved, stop.signal, out_of_time,
                       stopped_by_other_worker)


def main(argv=None):
    run, overrides = parse_flags(argv)
    # TensorFlow's Python-side deprecation notices (e.g. from Saver's own
    # checkpoint pruning) are not actionable for a user of this script.
    tf.get_logger().setLevel("ERROR")
    try:
        result = train(run, overrides, log=lambda text: print(text, flush=True))
    except (FileNotFoundError, ValueError, TrainingDiverged, OutputError, WorkerLost) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 128 + result.stopped_by if result.stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
