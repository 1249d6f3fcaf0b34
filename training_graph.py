"""The training graph: the input pipeline, the networks built once per replica,
their losses and Adam ops, the fixed-z sample grid, the finiteness check of
the weights, the evaluation's generator and the Savers.

train_gan.py builds it once per attempt with `build` and runs it; nothing
here opens a Session. With one replica it is the single-device graph of the
classic DCGAN; with several, tf.distribute builds the networks once per
replica and all-reduces their gradients (replicas.py).
"""

import dataclasses

import hardware  # noqa: F401  (first: it picks TensorFlow's CPU kernels before TensorFlow loads)
import tensorflow as tf

import gan_run
import generate_face
import replicas
from gan_model import GanOutputs, finite_or_zero, ganModel, images_from_uint8, tile_images

tf1 = tf.compat.v1

SAMPLE_GRID = (8, 8)  # rows, columns of the training sample grids

# GanOutputs fields of one number per replica that the D step reports; with
# several replicas, their mean over all replicas (G's loss is averaged apart).
D_STEP_MEANS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real", "d_fake")


@dataclasses.dataclass(kw_only=True)
class TrainingGraph:
    """Everything the training loop runs, by name (see `build`)."""
    graph: tf.Graph
    layout: replicas.Layout
    strategy: object          # the tf.distribute strategy the graph was built in
    iterator: object          # tf.data iterator over uint8 batches
    start_batch: tf.Tensor    # int64 placeholder fed when the iterator is initialised
    z: tf.Tensor              # placeholder [replicas * batch_size, z_dim]: the global batch's
    gan: GanOutputs           # losses and D outputs, averaged over the replicas
    d_summary: tf.Tensor      # merged summaries fetched with the D step
    g_summary: tf.Tensor      # merged summaries fetched with the G step
    global_step: tf.Variable
    d_train_op: tf.Operation
    g_train_op: tf.Operation
    weights_finite: tf.Tensor  # bool, after the G step: no weight is NaN or infinite
    network_variables: list   # both networks' weights and batch-norm statistics
    samples: tf.Tensor        # the 8x8 sample batch from the fixed z, inference mode
    samples_summary: tf.Tensor  # the grid as an image, and the weights' histograms
    eval_net: gan_run.GeneratorNet  # z placeholder -> faces, for the evaluation
    saver: tf1.train.Saver = None
    best_saver: tf1.train.Saver = None  # keeps the best-scoring checkpoint
    init: tf.Operation = None


def update_runs(training, schedule):
    """The train ops of one iteration, grouped by Session.run: with
    reuse_fake G's op waits for D's inside one run; with classic each runs
    on its own (see HParams.schedule)."""
    if schedule == "reuse_fake":
        return [[training.d_train_op, training.g_train_op]]
    return [[training.d_train_op], [training.g_train_op]]


def variable_name(variable):
    """A variable's name without ":0", the same for every replica's copy."""
    return variable.name.rsplit(":", 1)[0]


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
    # No autotuning: the pipeline has nothing to tune (a fixed prefetch), and
    # its model thread sleeps with a growing back-off that Session.close then
    # waits out: 10-20 seconds at the end of a run of a few minutes, measured.
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = dataset.prefetch(4).with_options(options)
    return tf1.data.make_initializable_iterator(dataset), start_batch


def build(hparams, images, keep_checkpoints=5, layout=replicas.Layout(), cluster=None):
    """The whole training graph over `images` (uint8 [N, H, W, 3]), finalized.

    cluster: the replicas.OneWorker or replicas.Workers of the run (by
    default the layout's); it adds what several workers need (the stop
    vote, the facts they compare).
    """
    cluster = cluster or replicas.coordination(layout, timeout=300.0)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(hparams.seed)
        strategy = replicas.make_strategy(layout)
        with strategy.scope():
            parts = _networks(hparams, layout, strategy, images, cluster)
            parts.update(_samples_and_checks(hparams, parts["network_variables"],
                                             parts["g_train_op"]))
            training = TrainingGraph(graph=graph, layout=layout, strategy=strategy, **parts)
            cluster.build_facts(strategy)
            # Built last, so that they save the optimizers' slots and the step too.
            training.saver = tf1.train.Saver(max_to_keep=keep_checkpoints,
                                             save_relative_paths=True)
            training.best_saver = tf1.train.Saver(max_to_keep=1, save_relative_paths=True)
            training.init = tf1.global_variables_initializer()
    graph.finalize()  # the loop must not grow the graph
    return training


def _networks(hparams, layout, strategy, images, cluster):
    """The replicated part: every replica's networks, losses and Adam ops, and
    what the loop reads of them (averaged over the replicas)."""
    iterator, start_batch = build_input(images, hparams, layout)
    worker_batch = iterator.get_next()
    z = tf1.placeholder(tf.float32, [hparams.batch_size * layout.replicas, hparams.z_dim],
                        name="z")
    global_step = tf1.train.get_or_create_global_step()
    cluster.build_vote()
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
        return d_train_op, g_train_op, fields, replica_z, cluster.replica_wish()

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
    cluster.count_votes(strategy, wishes)
    networks = [v for v in tf1.global_variables() if variable_name(v) in network_names]
    return dict(iterator=iterator, start_batch=start_batch, z=z, gan=gan,
                d_summary=d_summary, g_summary=g_summary, global_step=global_step,
                d_train_op=d_train_op, g_train_op=g_train_op, network_variables=networks)


def all_finite(variables):
    """A bool tensor: no value of any of `variables` is NaN or infinite.

    Through their sum, which any NaN or infinity makes NaN or infinite: one
    read of each value, where is_finite writes a bool for each and
    reduce_all reads those again. Finite values overflow the sum only past
    3.4e38 in all, weights that diverged long before.
    """
    with tf.name_scope("finiteness_check"):  # one name for its ops, for profiles
        return tf.math.is_finite(tf.add_n([tf.reduce_sum(v) for v in variables]))


def _samples_and_checks(hparams, networks, g_train_op):
    """The fixed-z sample grid and its summary, the evaluation's generator,
    and the check that every weight is finite after the G step."""
    model = ganModel(hparams)
    # The fixed sample z is a variable, so every checkpoint carries it and
    # grids stay comparable across resumes.
    rows, cols = SAMPLE_GRID
    sample_z = tf1.get_variable(
        "sample_z", initializer=generate_face.sample_grid_z(
            hparams.seed, rows * cols, hparams.z_dim), trainable=False)
    samples = gan_run.GeneratorNet(hparams, sample_z, model=model).images
    # Written on sample steps only: the grid, and every layer's weights.
    samples_summary = tf1.summary.merge(
        [tf1.summary.image("samples", tile_images(samples, rows, cols))]
        + [tf1.summary.histogram(f"weights/{variable_name(v)}", finite_or_zero(v))
           for v in tf1.trainable_variables() if variable_name(v).endswith("/w")])
    eval_net = gan_run.GeneratorNet(hparams, model=model, name="eval_z")

    # A NaN gradient can poison weights while the losses stay finite (a
    # ReLU turns NaN into 0 on the way forward), so the weights and
    # batch-norm statistics of both networks are checked too, once the G
    # step has run: fetch this only together with g_train_op. (Adam's
    # slots and G's averages only turn NaN through the weights.)
    with tf.control_dependencies([g_train_op]):
        weights_finite = all_finite(networks)
    return dict(samples=samples, samples_summary=samples_summary, eval_net=eval_net,
                weights_finite=weights_finite)
