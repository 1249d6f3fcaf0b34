"""Data-parallel training on several devices and machines, with tf.distribute.

A replica is one copy of the networks on one device; each step, every
replica trains on its own --batch_size images, and tf.distribute sums the
replicas' gradients (all-reduce) so that every copy takes the same update.

  --devices auto   every GPU of the machine (one replica each), else the CPU;
  --devices N      N replicas: the first N GPUs, or, on a machine without
                   GPUs, the CPU split into N logical devices (to try the
                   code path; on one CPU it costs time, it saves none).

Several machines: when TF_CONFIG names a cluster of more than one worker,
the run uses MultiWorkerMirroredStrategy over all of them, each machine
contributing its GPUs (or its CPU as one replica). Worker 0 is the chief:
it alone writes checkpoints, sample grids, TensorBoard events and
hparams.json. Every worker reads --ckpt_dir to resume, so on several
machines it must be a folder they all see (a shared file system).

One replica on one machine uses TensorFlow's default strategy: the graph is
the single-device graph of the classic DCGAN.

The training loop meets the other workers through one object (`coordination`):
OneWorker, which does nothing, or Workers, which knows who is chief, opens
the Session on this worker's server, bounds every run, checks that the
workers agree, counts their votes to stop and names a worker that is lost.
"""

import contextlib
import dataclasses
import json
import os
import socket

import hardware
import numpy as np

from gan_run import NETWORK_SCOPES

TF_CONFIG = "TF_CONFIG"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the replicas of a run live.

    devices: this worker's devices, one replica each (e.g. ("/gpu:0", "/gpu:1")).
    logical_cpus: how many logical devices the CPU is split into (0: not split).
    cluster: TF_CONFIG's cluster ({"worker": ["host:port", ...]}) or None.
    worker_index: this worker's index in cluster["worker"].
    """
    devices: tuple = ("/cpu:0",)
    logical_cpus: int = 0
    cluster: dict = None
    worker_index: int = 0

    @property
    def workers(self):
        """Addresses of the cluster's workers, or [] on one machine."""
        return list(self.cluster["worker"]) if self.cluster else []

    @property
    def num_workers(self):
        return max(len(self.workers), 1)

    @property
    def local_replicas(self):
        return len(self.devices)

    @property
    def replicas(self):
        """Replicas in the whole run, every worker's."""
        return self.num_workers * self.local_replicas

    @property
    def first_replica(self):
        """Global index of this worker's first replica."""
        return self.worker_index * self.local_replicas

    @property
    def is_chief(self):
        return self.worker_index == 0

    def describe(self):
        where = ", ".join(self.devices)
        if self.logical_cpus:
            where += f" (the CPU split into {self.logical_cpus} logical devices)"
        if self.num_workers > 1:
            return (f"worker {self.worker_index} of {self.num_workers}"
                    f"{' (chief)' if self.is_chief else ''}: {self.local_replicas} of the "
                    f"run's {self.replicas} replicas here ({where})")
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''}: {where}"


def parse_devices(text):
    """argparse type of --devices: "auto" or a positive number of replicas."""
    import argparse
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected auto or a number of replicas of at least 1, got {text!r}")
    return value


def read_cluster(environ=None):
    """(cluster, worker index) from TF_CONFIG, or (None, 0) without one.

    Only clusters of workers are accepted (worker 0 is the chief); a
    cluster of one worker is the same as none.

    Raises:
      ValueError: TF_CONFIG is set but unusable, saying what is wrong.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return None, 0
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{TF_CONFIG} is not a JSON object with \"cluster\" and \"task\" "
                         f"({error}); see the README's \"Several machines\"") from error
    others = sorted(set(cluster) - {"worker"})
    if others:
        raise ValueError(f"{TF_CONFIG} names {', '.join(others)} jobs; this trainer uses "
                         f"only \"worker\" (worker 0 is the chief)")
    workers = cluster.get("worker") or []
    if not isinstance(workers, list) or not all(isinstance(w, str) and ":" in w
                                                for w in workers):
        raise ValueError(f"{TF_CONFIG}'s cluster.worker must be a list of \"host:port\" "
                         f"addresses, got {workers!r}")
    if task.get("type", "worker") != "worker":
        raise ValueError(f"{TF_CONFIG}'s task type must be \"worker\", got {task.get('type')!r}")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < max(len(workers), 1):
        raise ValueError(f"{TF_CONFIG}'s task.index must be a worker number from 0 to "
                         f"{len(workers) - 1}, got {index!r}")
    if len(workers) <= 1:
        return None, 0
    return {"worker": workers}, index


def plan(devices="auto", environ=None, gpus=None):
    """The Layout that --devices and TF_CONFIG ask for on this machine.

    Args:
      devices: "auto" or a number of replicas on this machine.
      environ: the environment to read TF_CONFIG from (default os.environ).
      gpus: how many GPUs the machine has (default: ask TensorFlow).

    Raises:
      ValueError: a request this machine cannot meet, saying what to pass.
    """
    cluster, index = read_cluster(environ)
    if gpus is None:
        import tensorflow as tf
        gpus = len(tf.config.list_physical_devices("GPU"))
    if devices == "auto":
        count = max(gpus, 1)
    else:
        count = int(devices)
        if gpus and count > gpus:
            raise ValueError(f"--devices {count} asks for more replicas than this machine's "
                             f"{gpus} GPUs; pass --devices {gpus} or auto")
    if gpus:
        return Layout(tuple(f"/gpu:{i}" for i in range(count)), 0, cluster, index)
    if cluster and count > 1:
        raise ValueError(f"--devices {count}: with several workers, a machine without GPUs "
                         f"trains as one replica on its CPU; pass --devices 1 or auto")
    if count == 1:
        return Layout(("/cpu:0",), 0, cluster, index)
    return Layout(tuple(f"/cpu:{i}" for i in range(count)), count, cluster, index)


def make_strategy(layout):
    """The tf.distribute strategy of a layout; call inside the run's graph."""
    import tensorflow as tf
    if layout.num_workers > 1:
        # The cluster as read_cluster read it, and only the GPUs the layout
        # chose (by default the strategy would take every GPU it sees).
        gpus = layout.local_replicas if layout.devices[0].startswith("/gpu") else 0
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(layout.cluster), task_type="worker",
            task_id=layout.worker_index, num_accelerators={"GPU": gpus}, rpc_layer="grpc")
        strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver)
    elif layout.local_replicas > 1:
        strategy = tf.compat.v1.distribute.MirroredStrategy(list(layout.devices))
    else:
        strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync != layout.replicas:
        raise RuntimeError(f"tf.distribute made {strategy.num_replicas_in_sync} replicas "
                           f"where the layout has {layout.replicas} ({layout.describe()})")
    return strategy


def session_config(layout, strategy):
    """hardware.session_config() plus what the layout needs.

    A ConfigProto that does not ask for the logical CPU devices gets one CPU,
    and soft placement then puts every replica on it without a word; so the
    count is always set when the CPU is split.
    """
    config = hardware.session_config()
    if layout.logical_cpus:
        config.device_count["CPU"] = layout.logical_cpus
    if layout.num_workers > 1:
        config = strategy.update_config_proto(config)
    return config


_servers = {}


def worker_server(layout, config):
    """This worker's tf.distribute.Server, started on first use; the
    training Session opens on its target. One per process: its port stays
    bound until the process ends."""
    import tensorflow as tf
    if layout.worker_index not in _servers:
        _servers[layout.worker_index] = tf.distribute.Server(
            tf.train.ClusterSpec(layout.cluster), job_name="worker",
            task_index=layout.worker_index, config=config, start=True)
    return _servers[layout.worker_index]


def replica_rows(batch, rows_per_replica, first_replica=0):
    """This replica's rows of a batch that holds replicas `first_replica`,
    `first_replica + 1`, ... in order. Call in replica context."""
    import tensorflow as tf
    context = tf.distribute.get_replica_context()
    index = context.replica_id_in_sync_group - first_replica
    return batch[index * rows_per_replica:(index + 1) * rows_per_replica]


def mean_over_replicas(strategy, values):
    """{name: per-replica scalar} -> {name: scalar tensor}, averaged over every
    replica of the run, so that every worker reports the same numbers.

    Call in cross-replica context. The values, all of one dtype, go into
    one reduction.
    """
    import tensorflow as tf
    names = sorted(values)
    stacked = strategy.extended.call_for_each_replica(
        lambda *scalars: tf.stack(scalars), args=tuple(values[name] for name in names))
    reduced = strategy.reduce(tf.distribute.ReduceOp.MEAN, stacked, axis=None)
    return {name: reduced[i] for i, name in enumerate(names)}


def first_replica_value(strategy, per_replica):
    """A tensor holding this worker's first replica's value of a per-replica
    result, which runs every local replica's.

    Fetching one replica's result alone would leave the other replicas'
    halves of an all-reduce waiting for it forever.
    """
    import tensorflow as tf
    import tensorflow.nest as nest
    local = strategy.experimental_local_results(per_replica)
    if len(local) == 1:
        return local[0]
    with tf.control_dependencies(nest.flatten(local[1:])):
        return nest.map_structure(tf.identity, local[0])


def loopback_workers(count):
    """Addresses of `count` free ports on 127.0.0.1: a cluster on one machine
    (the tests, bench/scaling.py)."""
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{each.getsockname()[1]}" for each in sockets]
    for each in sockets:
        each.close()
    return addresses


def unreachable_workers(layout, timeout=2.0):
    """Addresses of the other workers that refuse a TCP connection."""
    gone = []
    for index, address in enumerate(layout.workers):
        if index == layout.worker_index:
            continue
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError:
            gone.append((index, address))
    return gone


# ---------------------------------------------------------------------------
# The seam between the training loop and several workers
# ---------------------------------------------------------------------------

class WorkerLost(RuntimeError):
    """With several workers, one stopped answering; this one stopped too."""


class OneWorker:
    """What several workers add to a run, for a run of one worker: nothing.

    The training loop talks to this object (or to `Workers`) and never asks
    how many workers there are. It says who writes (`is_chief`), opens the
    Session, builds and feeds the stop vote, checks that the workers agree,
    and turns a lost worker into its clear error.
    """
    is_chief = True
    run_options = None  # tf.compat.v1.RunOptions of every training Session.run

    def __init__(self, layout):
        self.layout = layout

    # Graph parts, built in the training graph (training_graph.build).
    def build_vote(self):
        """Before the replicas' networks: the inputs of the stop vote."""

    def replica_wish(self):
        """In each replica's step: its share of the vote (None: no vote)."""
        return None

    def count_votes(self, strategy, wishes):
        """After the replicas' steps: the sum of their wishes."""

    def build_facts(self, strategy):
        """The facts every worker must agree on before training."""

    # In the Session.
    @contextlib.contextmanager
    def session(self, graph, strategy):
        """A Session for the training graph."""
        import tensorflow as tf
        config = session_config(self.layout, strategy)
        with tf.compat.v1.Session(self._target(config), graph=graph, config=config) as sess:
            yield sess

    def _target(self, config):
        return ""

    def check_agreement(self, sess, resume_step, num_images):
        """Raise ValueError if the workers found different runs on disk."""

    def vote(self, wish):
        """(feed, fetches) that put this worker's wish to stop into the D step."""
        return {}, {}

    def stop_after(self, fetched, wish, wish_now):
        """(stop now, stopped by another worker), after a step that was fed
        `wish`; `wish_now` is this worker's wish once the step is done. One
        worker stops as soon as it wishes."""
        return wish_now, False

    @contextlib.contextmanager
    def reporting_lost_workers(self, step_now, ckpt_dir):
        """Around the training Session: a failed run stays what it is here."""
        yield

    def after_training(self, sess, step, log):
        """What the run logs once the loop has ended."""

    def when_stopping(self):
        """What the loop's log says it will do on a signal."""
        return "saving a checkpoint"


class Workers(OneWorker):
    """The seam for several workers (TF_CONFIG naming more than one).

    Worker 0 is the chief and alone writes. Every Session.run is bounded by
    `timeout` seconds, so that a worker that is gone stops the others
    instead of leaving them waiting. A worker's wish to stop (a signal, its
    time limit) is fed into the D step and summed over the workers, so every
    worker stops after the same step.
    """

    def __init__(self, layout, timeout):
        import tensorflow as tf
        super().__init__(layout)
        self.timeout = timeout
        self.is_chief = layout.is_chief
        self.run_options = tf.compat.v1.RunOptions(timeout_in_ms=int(timeout * 1000))

    def build_vote(self):
        import tensorflow as tf
        self.stop_wish = tf.compat.v1.placeholder_with_default(0.0, [], "stop_wish")

    def replica_wish(self):
        import tensorflow as tf
        return tf.identity(self.stop_wish)

    def count_votes(self, strategy, wishes):
        import tensorflow as tf
        self.stop_votes = strategy.reduce(tf.distribute.ReduceOp.SUM, wishes, axis=None)

    def build_facts(self, strategy):
        import tensorflow as tf
        # Before any variable is touched, the workers compare what they found
        # on disk: the step they resume from and how many faces they read.
        self.worker_facts = tf.compat.v1.placeholder(tf.float64, [2], "worker_facts")
        self.facts_moments = mean_over_replicas(strategy, {
            "mean": strategy.extended.call_for_each_replica(lambda: self.worker_facts),
            "square": strategy.extended.call_for_each_replica(
                lambda: self.worker_facts ** 2)})

    def _target(self, config):
        return worker_server(self.layout, config).target

    def check_agreement(self, sess, resume_step, num_images):
        """Every worker must resume from the same step and read as many faces;
        else their weights or batches would silently differ."""
        mine = [resume_step, num_images]
        moments = sess.run(self.facts_moments, {self.worker_facts: mine},
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

    def vote(self, wish):
        return {self.stop_wish: float(wish)}, {"stop_votes": self.stop_votes}

    def stop_after(self, fetched, wish, wish_now):
        stop = fetched["stop_votes"] > 0  # every worker counts the same votes
        return bool(stop), bool(stop and not wish)

    @contextlib.contextmanager
    def reporting_lost_workers(self, step_now, ckpt_dir):
        """A Session.run that failed with several workers becomes WorkerLost,
        naming the worker that is gone; step_now() gives the step reached."""
        import tensorflow as tf
        try:
            yield
        except tf.errors.OpError as error:
            raise self.lost_worker(error, step_now(), ckpt_dir) from error

    def after_training(self, sess, step, log):
        import tensorflow as tf
        networks = [v for v in sess.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
                    if v.name.startswith(NETWORK_SCOPES)]
        log(f"weights digest {weights_digest(sess, networks)} at step {step}")

    def lost_worker(self, error, step, ckpt_dir):
        """WorkerLost for a Session.run that failed (see reporting_lost_workers)."""
        gone = unreachable_workers(self.layout)
        if gone:
            what = ", ".join(f"worker {index} ({address})" for index, address in gone)
            what += " stopped answering"
        else:
            what = (f"the other workers did not answer within --worker_timeout "
                    f"{self.timeout:g} s")
        when = f"at step {step + 1}" if step is not None else "while the workers were starting"
        return WorkerLost(
            f"{what} {when} ({type(error).__name__}); this worker stops too. Start the same "
            f"command again on every machine: the run resumes from the chief's last "
            f"checkpoint in {ckpt_dir}")

    def when_stopping(self):
        return "stopping every worker after the next step"


def coordination(layout, timeout):
    """OneWorker or Workers, as the layout has one worker or several."""
    return Workers(layout, timeout) if layout.num_workers > 1 else OneWorker(layout)


def weights_digest(sess, variables):
    """A short hash of the variables' values, for comparing workers' copies."""
    import hashlib
    digest = hashlib.sha1()
    names = [v.name.rsplit(":", 1)[0] for v in variables]
    for name, value in sorted(zip(names, sess.run(variables))):
        digest.update(name.encode() + np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]
