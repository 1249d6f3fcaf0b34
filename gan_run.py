"""A trained run on disk: its checkpoints, hparams.json (the RunFile), the
hyperparameters a resumed run takes, its preprocessing, one restore policy;
GeneratorNet, G built into any graph; and Generator, a run's G loaded once
and called many times.

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

import dataclasses
import json
from pathlib import Path

import hardware  # first: it picks TensorFlow's CPU kernels before TensorFlow loads
import numpy as np
import tensorflow as tf

import generate_face
from gan_model import HParams, ganModel, images_to_uint8

tf1 = tf.compat.v1

CKPT_PREFIX = "gan.ckpt"
HPARAMS_FILE = "hparams.json"
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


@dataclasses.dataclass(frozen=True)
class RunFile:
    """What hparams.json holds: the hyperparameters, and the run's records.

    The file is {"hparams": {every HParams field}, "records": {"replicas": N}}:
    the hyperparameters rebuild the graph; the records say how the run was
    trained (N replicas made a global batch of N x batch_size).
    """
    hparams: HParams
    replicas: int = 1


def read_run_file(ckpt_dir):
    """The RunFile of the run in ckpt_dir; the one reader of hparams.json.

    Also reads the older layout, the hyperparameters at the top level with
    "replicas" beside them.

    Raises:
      FileNotFoundError: there is no hparams.json.
      ValueError: it is not JSON, or holds an unknown or mistyped value.
    """
    path = Path(ckpt_dir) / HPARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoints in {ckpt_dir} cannot be rebuilt "
            f"without the hyperparameters they were trained with")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if "hparams" in values:
        hparams, records = values["hparams"], values.get("records", {})
    else:  # the older layout
        hparams = {k: v for k, v in values.items() if k != "replicas"}
        records = {"replicas": values.get("replicas", 1)}
    replicas = records.get("replicas", 1) if isinstance(records, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"{path}: records.replicas should be a count of replicas, "
                         f"got {replicas!r}")
    return RunFile(HParams.from_dict(hparams, source=str(path)), replicas)


def write_run_file(ckpt_dir, hparams, replicas=1):
    """Write the run's hparams.json atomically (see RunFile)."""
    values = {"hparams": hparams.to_dict(), "records": {"replicas": replicas}}
    with generate_face.atomic_path(Path(ckpt_dir) / HPARAMS_FILE) as temporary:
        temporary.write_text(json.dumps(values, indent=2) + "\n")


def resolve_hparams(ckpt_dir, overrides):
    """The hyperparameters of this run and the checkpoint it resumes from.

    A fresh run takes the defaults plus the flags given. A run whose
    ckpt_dir holds a checkpoint restores the saved hyperparameters; flags
    given again may change training settings, but not the architecture.

    Returns:
      (HParams, checkpoint path or None, {name: (saved, new)} of changes)
    """
    checkpoint = latest_checkpoint(ckpt_dir)
    if checkpoint is None:
        return dataclasses.replace(HParams(), **overrides).validate(), None, {}
    saved = read_run_file(ckpt_dir).hparams
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
    return read_run_file(Path(candidates[0]).parent).hparams


# ---------------------------------------------------------------------------
# A generator loaded once
# ---------------------------------------------------------------------------

class GeneratorNet:
    """G in inference mode, built into the current graph.

    The one place that decides whether faces come from G's trained weights
    or from their moving average: the average when the run keeps one, unless
    `use_ema` is false. Sampling, the training sample grid, completion, the
    SavedModel export and the evaluation all draw through it.

    Args:
      hparams: the run's HParams.
      z: a float32 [N, z_dim] tensor, or None for a placeholder named `name`.
      model: the ganModel to build with (a new one reads the same variables).

    Attributes:
      z: its input; images: float32 [N, H, W, 3] in [-1, 1]; images_uint8:
      the same, rounded to uint8; uses_ema: whether it draws with the average.
    """

    def __init__(self, hparams, z=None, use_ema=True, model=None, name="z"):
        self.uses_ema = use_ema and hparams.uses_ema
        self.z = z if z is not None else tf1.placeholder(tf.float32, [None, hparams.z_dim],
                                                         name=name)
        self.images = (model or ganModel(hparams)).generator(
            self.z, is_training=False, use_ema=self.uses_ema)
        self.images_uint8 = images_to_uint8(self.images)


class Generator:
    """A run's trained generator, built and restored once, then called many times.

    Usage:
        with gan_run.Generator("ckpt") as generator:
            images = generator(z)   # float32 [N, H, W, 3] in [-1, 1], any N

    The graph is rebuilt from the run's hparams.json (see GeneratorNet).

    Attributes:
      checkpoint: the checkpoint restored (by the module's policy).
      hparams: the run's HParams.
      uses_ema: whether it draws with G's moving-average weights.
    """

    def __init__(self, ckpt_dir="ckpt", checkpoint=None, use_ema=True, log=print):
        self.hparams = run_hparams(ckpt_dir, checkpoint)
        graph = tf.Graph()
        with graph.as_default():
            self._net = GeneratorNet(self.hparams, use_ema=use_ema)
            restorer = NetworkRestorer(graph)
        graph.finalize()
        self.uses_ema = self._net.uses_ema
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
        return self._session.run(self._net.images, {self._net.z: z})

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
