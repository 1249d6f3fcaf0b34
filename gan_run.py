"""A trained run on disk: its checkpoints, hparams.json, its preprocessing,
one restore policy, and a generator that is loaded once and called many times.

train_gan.py, predict_gan.py and evaluate_gan.py share this module rather
than import each other.

The restore policy, the same for training, prediction and evaluation:

- Given a folder, use its newest checkpoint that loads. Checkpoints are
  found on disk by their .index files, not through TensorFlow's `checkpoint`
  index file, which may name a checkpoint that was deleted or never finished.
  A damaged checkpoint (truncated data, an unreadable index) is skipped
  with a warning naming it, and the next older one is tried; if none loads,
  it is an error, and the folder is left as it is.
- Given one checkpoint, use it; if it cannot be read, it is an error that
  says so (nothing else is substituted for what the user asked for).
- A checkpoint that does not fit the graph (another architecture) is always
  an error that lists the differences; it is not "damaged".
"""

import json
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

import generate_face
from gan_model import HParams, ganModel

tf1 = tf.compat.v1

CKPT_PREFIX = "gan.ckpt"
HPARAMS_FILE = "hparams.json"
REPLICAS_KEY = "replicas"  # in hparams.json beside the hyperparameters
# Variable scopes a checkpoint provides to a generator: both networks and
# G's moving averages (Adam's slots and the step are training's own).
NETWORK_SCOPES = ("generator/", "generator_ema/", "discriminator/")


# ---------------------------------------------------------------------------
# Files of a run
# ---------------------------------------------------------------------------

def step_of(checkpoint):
    """The global step in a checkpoint prefix such as ckpt/gan.ckpt-1500."""
    return int(str(checkpoint).rsplit("-", 1)[1])


def checkpoints_newest_first(ckpt_dir):
    """Prefixes of the checkpoints in ckpt_dir whose .index exists, newest step first."""
    found = []
    for index in Path(ckpt_dir).glob(f"{CKPT_PREFIX}-*.index"):
        prefix = str(index)[:-len(".index")]
        if prefix.rsplit("-", 1)[1].isdigit():
            found.append((step_of(prefix), prefix))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def latest_checkpoint(ckpt_dir):
    """Path prefix of the newest checkpoint in ckpt_dir, or None."""
    found = checkpoints_newest_first(ckpt_dir)
    return found[0] if found else None


def _read_hparams_file(ckpt_dir):
    path = Path(ckpt_dir) / HPARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoints in {ckpt_dir} cannot be rebuilt "
            f"without the hyperparameters they were trained with")
    try:
        return path, json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error


def load_hparams(ckpt_dir):
    """The HParams saved with the run in ckpt_dir (ValueError if unusable)."""
    path, values = _read_hparams_file(ckpt_dir)
    if isinstance(values, dict):
        values = {k: v for k, v in values.items() if k != REPLICAS_KEY}
    return HParams.from_dict(values, source=str(path))


def saved_replicas(ckpt_dir):
    """How many replicas last trained the run in ckpt_dir (1 if not recorded)."""
    _, values = _read_hparams_file(ckpt_dir)
    return int(values.get(REPLICAS_KEY, 1)) if isinstance(values, dict) else 1


def save_hparams(ckpt_dir, hparams, replicas=1):
    """Write the run's hparams.json atomically, with the replica count that
    trains it (a record for the reader: the global batch is batch_size x
    replicas; a checkpoint resumes on any count)."""
    values = {**hparams.to_dict(), REPLICAS_KEY: replicas}
    with generate_face.atomic_path(Path(ckpt_dir) / HPARAMS_FILE) as temporary:
        temporary.write_text(json.dumps(values, indent=2) + "\n")


def preprocessing(hparams):
    """The data preprocessing that a run's hyperparameters ask for."""
    return generate_face.Preprocessing(hparams.crop_h, hparams.crop_w, hparams.output_h,
                                       hparams.output_w, hparams.is_crop)


def checkpoints_to_try(ckpt_dir="ckpt", checkpoint=None):
    """(checkpoints to try in order, whether one was named explicitly).

    `checkpoint` may be a prefix or a folder (then its checkpoints, newest
    first). Raises FileNotFoundError, saying how to get one, if there is none.
    """
    if checkpoint and not Path(checkpoint).is_dir():
        if not Path(str(checkpoint) + ".index").is_file():
            raise FileNotFoundError(
                f"checkpoint {checkpoint} not found (expected {checkpoint}.index); pass a "
                f"prefix such as ckpt/gan.ckpt-2000 or a folder of checkpoints")
        return [str(checkpoint)], True
    folder = checkpoint or ckpt_dir
    found = checkpoints_newest_first(folder)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {folder}: train first, e.g. "
            f"`python train_gan.py --data_root data/demo_faces --ckpt_dir {folder}`")
    return found, False


# ---------------------------------------------------------------------------
# Restoring
# ---------------------------------------------------------------------------

class DamagedCheckpoint(ValueError):
    """A checkpoint whose files cannot be read."""


def check_checkpoint_fits(checkpoint, variables):
    """Raise ValueError unless the checkpoint holds every variable, same shapes.

    Comparing shapes before restoring turns TensorFlow's assign-shape
    errors into a message that names the checkpoint and the differences.

    Raises:
      DamagedCheckpoint: the checkpoint's index cannot be read.
      ValueError: it holds other variables or shapes than `variables`.
    """
    try:
        stored = dict(tf.train.list_variables(str(checkpoint)))
    except (tf.errors.OpError, ValueError) as error:
        raise DamagedCheckpoint(f"cannot read checkpoint {checkpoint}: {error}") from error
    differences = []
    for variable in variables:
        name = variable.op.name
        shape = variable.shape.as_list()
        if name not in stored:
            differences.append(f"{name} is missing")
        elif list(stored[name]) != shape:
            differences.append(f"{name} is {list(stored[name])} in the checkpoint, "
                               f"{shape} in this graph")
    if differences:
        listed = "; ".join(differences[:5])
        more = f" (and {len(differences) - 5} more)" if len(differences) > 5 else ""
        raise ValueError(
            f"checkpoint {checkpoint} does not fit this architecture: {listed}{more}. "
            f"It was trained with other --gf_dim/--df_dim/--z_dim/--output_h/--output_w "
            f"values than {Path(checkpoint).parent / HPARAMS_FILE} says")


def restore(sess, saver, variables, ckpt_dir="ckpt", checkpoint=None, log=print):
    """Restore a run into sess by the module's policy; return the checkpoint used.

    Args:
      saver: a Saver over `variables`.
      variables: the variables to restore, to check the checkpoint against.
      ckpt_dir, checkpoint: see `checkpoints_to_try`.
    """
    candidates, named = checkpoints_to_try(ckpt_dir, checkpoint)
    for candidate in candidates:
        try:
            check_checkpoint_fits(candidate, variables)
            # In the Session's graph: outside it, with eager execution on (as
            # in the scripts), the Saver would try to restore eagerly and fail.
            with sess.graph.as_default():
                saver.restore(sess, candidate)
            return candidate
        except (DamagedCheckpoint, tf.errors.OpError) as error:
            reason = str(getattr(error, "message", error)).splitlines()[0]
            if named:
                raise ValueError(f"checkpoint {candidate} cannot be read ({reason}); pass "
                                 f"an older one with --checkpoint") from error
            log(f"warning: skipping damaged checkpoint {candidate}: {reason}")
    raise ValueError(
        f"no checkpoint in {checkpoint or ckpt_dir} can be loaded (see the warnings above). "
        f"Nothing was changed there; move those files away, or pass another --ckpt_dir, "
        f"to start anew")


class NetworkRestorer:
    """Restores what a checkpoint gives a generator: both networks and G's averages.

    Build it inside the graph (its Saver adds ops), before any Session runs.
    """

    def __init__(self, graph):
        self.variables = [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                          if v.op.name.startswith(NETWORK_SCOPES)]
        self.saver = tf1.train.Saver(self.variables)

    def restore(self, sess, ckpt_dir="ckpt", checkpoint=None, log=print):
        """Restore into sess by the module's policy; returns the checkpoint used."""
        return restore(sess, self.saver, self.variables, ckpt_dir, checkpoint, log)


def run_hparams(ckpt_dir="ckpt", checkpoint=None):
    """The HParams of the run a checkpoint (or folder) belongs to."""
    candidates, _ = checkpoints_to_try(ckpt_dir, checkpoint)
    return load_hparams(Path(candidates[0]).parent)


# ---------------------------------------------------------------------------
# A generator loaded once
# ---------------------------------------------------------------------------

class Generator:
    """A run's trained generator, built and restored once, then called many times.

    Usage:
        with gan_run.Generator("ckpt") as generator:
            images = generator(z)   # float32 [N, H, W, 3] in [-1, 1], any N

    The graph is rebuilt from the run's hparams.json; the network runs in
    inference mode (batch-norm moving averages), on G's moving-average
    weights when the run kept them and `use_ema` is true.

    Attributes:
      checkpoint: the checkpoint restored (by the module's policy).
      hparams: the run's HParams.
    """

    def __init__(self, ckpt_dir="ckpt", checkpoint=None, use_ema=True, log=print):
        self.hparams = run_hparams(ckpt_dir, checkpoint)
        graph = tf.Graph()
        with graph.as_default():
            self._z = tf1.placeholder(tf.float32, [None, self.hparams.z_dim], name="z")
            self._images = ganModel(self.hparams).generator(
                self._z, is_training=False, use_ema=use_ema and self.hparams.uses_ema)
            restorer = NetworkRestorer(graph)
        graph.finalize()
        self._session = tf1.Session(graph=graph, config=hardware.session_config())
        try:
            self.checkpoint = restorer.restore(self._session, ckpt_dir, checkpoint, log)
        except BaseException:
            self._session.close()
            raise

    @property
    def step(self):
        return step_of(self.checkpoint)

    def __call__(self, z):
        """z: float32 [N, z_dim] -> images float32 [N, output_h, output_w, 3] in [-1, 1]."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.hparams.z_dim:
            raise ValueError(f"z should be [N, {self.hparams.z_dim}] for this checkpoint, "
                             f"got {list(z.shape)}")
        return self._session.run(self._images, {self._z: z})

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

