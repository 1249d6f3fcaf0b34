"""The DCGAN graph: generator, discriminator, losses, summaries, Adam ops.

Graph code only: no file reading, no Session, no printing, so it can be
built in tests, in training and in prediction alike. The layers it stacks
(linear, convolutions, batch norm, leaky ReLU) are in layers.py. Written
against `tf.compat.v1` with raw `tf.nn` ops, because `tf.contrib` and
`tf.compat.v1.layers` no longer exist on TensorFlow 2.21.
"""

import dataclasses
import math

import hardware  # noqa: F401  (first: it picks TensorFlow's CPU kernels before TensorFlow loads)
import tensorflow as tf

from cli_flags import below, flag_field
from layers import batch_norm, conv2d, deconv2d, leaky_relu, linear

tf1 = tf.compat.v1


# Compute types of --precision. Variables are float32 in both. "auto" is
# resolved to one of them, for the hardware at hand, before a graph is built
# (see hardware.resolve_precision).
PRECISIONS = {"fp32": tf.float32, "bf16": tf.bfloat16}
AUTO_PRECISION = "auto"
# How an iteration's G update gets its generated batch (see ganModel.optimizers).
SCHEDULES = ("classic", "reuse_fake")


@dataclasses.dataclass(frozen=True)
class HParams:
    """Every hyperparameter of a run, with the classic DCGAN face defaults.

    The training flags are generated from these fields, and a run writes
    them to `hparams.json` next to its checkpoints so that resuming and
    prediction rebuild exactly the same graph.
    """
    # Data preprocessing (applied to every source image).
    crop_h: int = flag_field(108, "centre-crop height in source pixels, before resizing")
    crop_w: int = flag_field(108, "centre-crop width in source pixels, before resizing")
    is_crop: bool = flag_field(True, "centre-crop before resizing (false: resize the whole image)")
    flip: bool = flag_field(False, "mirror a random half of each batch left-right (augmentation)")
    # Architecture.
    output_h: int = flag_field(64, "image height in pixels, generated and trained (multiple of 16)")
    output_w: int = flag_field(64, "image width in pixels, generated and trained (multiple of 16)")
    z_dim: int = flag_field(100, "length of the latent vector z")
    gf_dim: int = flag_field(64, "generator filters in its last hidden layer (x2, x4, x8 up)")
    df_dim: int = flag_field(64, "discriminator filters in its first layer (x2, x4, x8 deeper)")
    kernel_size: int = flag_field(5, "side of every stride-2 convolution's kernel (5: the "
                                     "classic TF1 DCGAN; 4: the PyTorch DCGAN, 0.64x the "
                                     "FLOPs)")
    init_stddev: float = flag_field(0.02, "standard deviation of the initial weights")
    bn_epsilon: float = flag_field(1e-5, "batch-norm variance epsilon")
    bn_momentum: float = flag_field(0.9, "batch-norm moving-average momentum")
    lrelu_slope: float = flag_field(0.2, "leaky ReLU slope of the discriminator")
    # Optimisation.
    batch_size: int = flag_field(64, "images per training step")
    learning_rate: float = flag_field(2e-4, "Adam learning rate of both networks")
    d_learning_rate: float = flag_field(0.0, "D's Adam learning rate when not 0 (two time-"
                                             "scale update rule); 0: --learning_rate")
    g_learning_rate: float = flag_field(0.0, "G's Adam learning rate when not 0; "
                                             "0: --learning_rate")
    beta1: float = flag_field(0.5, "Adam beta1 (momentum) of both networks")
    real_label: float = flag_field(1.0, "D's target for real images; 0.9 is one-sided "
                                        "label smoothing")
    g_steps: int = flag_field(1, "G updates per D update, on the same z (above 1 needs "
                                 "--schedule classic)")
    schedule: str = flag_field("reuse_fake", "reuse_fake: the G update trains on the D "
                                             "update's own G(z), judged by the updated D, in "
                                             "the same Session.run (the PyTorch DCGAN's "
                                             "schedule); classic: a second run computes G(z) "
                                             "again, as the TF1 DCGAN did (needed for "
                                             "--g_steps above 1). The same iteration: the D "
                                             "update leaves G's weights as they were",
                               choices=SCHEDULES)
    g_ema_decay: float = flag_field(0.0, "decay of an exponential moving average of G's "
                                         "weights used for samples and prediction "
                                         "(e.g. 0.999); 0: the trained weights")
    seed: int = flag_field(0, "seed of weights, data order and z")
    precision: str = flag_field("fp32", "fp32; bf16: convolutions and matmuls in bfloat16 "
                                        "(variables, batch-norm statistics, losses and Adam "
                                        "stay fp32); auto: bf16 where the hardware has it "
                                        "natively, else fp32")

    # Fields that decide variable shapes: a checkpoint only fits a graph
    # built with the same values.
    ARCHITECTURE = ("output_h", "output_w", "z_dim", "gf_dim", "df_dim", "kernel_size")

    def problems(self):
        """Human-readable reasons these values cannot train (empty if fine)."""
        found = []
        for name in ("output_h", "output_w"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                found.append(f"--{name} must be a positive multiple of 16 (the "
                             f"generator doubles 4x4 four times), got {value}")
        found += below(self, ["crop_h", "crop_w", "z_dim", "gf_dim", "df_dim", "batch_size",
                              "g_steps"], 1)
        if self.kernel_size < 2:
            found.append(f"--kernel_size must be at least 2 (the stride), got "
                         f"{self.kernel_size}")
        if self.schedule not in SCHEDULES:
            found.append(f"--schedule must be one of {', '.join(SCHEDULES)}, got "
                         f"{self.schedule!r}")
        if self.schedule == "reuse_fake" and self.g_steps != 1:
            found.append(f"--g_steps {self.g_steps} needs --schedule classic: reuse_fake "
                         f"(the default) takes one G update per D update")
        for name in ("init_stddev", "bn_epsilon", "learning_rate"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                found.append(f"--{name} must be a positive number, got {value}")
        for name in ("d_learning_rate", "g_learning_rate"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                found.append(f"--{name} must be 0 (same as --learning_rate) or a positive "
                             f"number, got {value}")
        for name in ("bn_momentum", "beta1", "g_ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                found.append(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.5 < self.real_label <= 1:
            found.append(f"--real_label must be in (0.5, 1], got {self.real_label}")
        if not 0 <= self.lrelu_slope < 1:
            found.append(f"--lrelu_slope must be in [0, 1), got {self.lrelu_slope}")
        if self.precision not in (AUTO_PRECISION, *PRECISIONS):
            found.append(f"--precision must be one of {AUTO_PRECISION}, "
                         f"{', '.join(PRECISIONS)}, got {self.precision!r}")
        return found + below(self, ["seed"], 0)

    def validate(self):
        """Raise ValueError listing every bad value."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(found))
        return self

    @property
    def uses_ema(self):
        """Whether the run keeps a moving average of G's weights to draw with."""
        return self.g_ema_decay > 0

    @property
    def d_lr(self):
        """D's learning rate in effect."""
        return self.d_learning_rate or self.learning_rate

    @property
    def g_lr(self):
        """G's learning rate in effect."""
        return self.g_learning_rate or self.learning_rate

    def architecture_differences(self, other):
        """[(field, self value, other value)] for architecture fields that differ."""
        return [(name, getattr(self, name), getattr(other, name))
                for name in self.ARCHITECTURE
                if getattr(self, name) != getattr(other, name)]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, source="hparams"):
        """Build from a dict, refusing unknown keys and wrongly typed values.

        Args:
          values: field name -> value; missing fields take the defaults.
          source: what to name in error messages (e.g. a file path).
        """
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of hyperparameters")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown hyperparameter(s) {', '.join(unknown)}")
        checked = {}
        for name, value in values.items():
            kind = fields[name].type
            # JSON has one number type: accept 2 for a float, refuse 2.5 for an int.
            ok = (isinstance(value, bool) if kind is bool else
                  isinstance(value, str) if kind is str else
                  isinstance(value, int) and not isinstance(value, bool) if kind is int else
                  isinstance(value, (int, float)) and not isinstance(value, bool))
            if not ok:
                raise ValueError(f"{source}: {name} should be {kind.__name__}, "
                                 f"got {value!r}")
            checked[name] = kind(value)
        return cls(**checked).validate()


@dataclasses.dataclass
class GanOutputs:
    """The losses, D outputs, fakes and summaries of a training step (see
    ganModel.build_model)."""
    d_loss: tf.Tensor         # D's loss: d_loss_real + d_loss_fake
    d_loss_real: tf.Tensor    # cross-entropy of real images against label 1
    d_loss_fake: tf.Tensor    # cross-entropy of generated images against label 0
    g_loss: tf.Tensor         # non-saturating G loss: generated images against 1
    d_real: tf.Tensor         # mean D(x), probability that real images are real
    d_fake: tf.Tensor         # mean D(G(z)), probability that fakes are real
    d_real_logits: tf.Tensor  # [N, 1] D's logits on the real batch
    d_fake_logits: tf.Tensor  # [M, 1] D's logits on the generated batch
    fake_images: tf.Tensor    # [N, H, W, 3] in [-1, 1], G in training mode
    generated: tf.Tensor      # the same in the compute dtype, as D judges them
    d_real_prob: tf.Tensor    # [N, 1] D(x) per image
    d_fake_prob: tf.Tensor    # [M, 1] D(G(z)) per image


class ganModel:
    """The classic DCGAN for faces (Radford et al. 2016).

    Usage:
        model = ganModel(hparams)
        outputs = model.build_model(real_images, z)
        d_train_op, g_train_op = model.optimizers(outputs, global_step)
        d_summary, g_summary = model.summaries(outputs, z)
        samples = model.generator(sample_z, is_training=False)
    """

    def __init__(self, hparams):
        self.hp = hparams.validate()
        if hparams.precision not in PRECISIONS:
            raise ValueError(f"precision {hparams.precision!r} must be resolved to one of "
                             f"{', '.join(PRECISIONS)} before the graph is built")
        self.compute_dtype = PRECISIONS[hparams.precision]
        # Moving-average update ops per network, filled while building.
        self.bn_updates = {"generator": [], "discriminator": []}
        # Generator variable name -> its exponential-moving-average shadow.
        self.ema_shadows = {}
        self._network_variables = None  # see network_variables

    def _ema_shadow(self, variable):
        """The shadow of a generator variable, `generator_ema/...`, made on first use.

        It starts from the variable's initial value and is not trainable.
        Created at the top level, whatever scope the caller is in.
        """
        # Not variable.op.name: on a second replica that names the replica's
        # own copy ("generator/linear/w/replica_1").
        name = variable.name.rsplit(":", 1)[0]
        if name not in self.ema_shadows:
            top = tf1.VariableScope(reuse=tf1.AUTO_REUSE, name="generator_ema")
            with tf1.variable_scope(top), tf1.name_scope(None):
                self.ema_shadows[name] = tf1.get_variable(
                    name[len("generator/"):], initializer=variable.initial_value,
                    trainable=False, aggregation=tf.VariableAggregation.MEAN)
        return self.ema_shadows[name]

    def _read_ema_shadow(self, getter, name, *args, **kwargs):
        """Custom getter: the generator built on its moving-average weights."""
        return self._ema_shadow(getter(name, *args, **kwargs))

    def generator(self, z, is_training, use_ema=False, dtype=tf.float32):
        """G: z [N, z_dim] -> images [N, output_h, output_w, 3] in (-1, 1).

        Every call shares the same variables (scope "generator/"); only the
        training call records batch-norm updates. `use_ema` (inference only)
        runs the same network on the moving averages of its weights and
        batch-norm statistics (`generator_ema/`, see `ema_update`). The
        images come in `dtype`; the compute dtype gives them as computed.
        """
        assert not (use_ema and is_training), "the EMA weights are never trained"
        hp = self.hp
        h16, w16 = hp.output_h // 16, hp.output_w // 16
        updates = self.bn_updates["generator"] if is_training else None

        def bn_relu(x, name):
            return batch_norm(x, name, is_training, hp.bn_epsilon, hp.bn_momentum, updates,
                              tf.nn.relu)

        getter = self._read_ema_shadow if use_ema else None
        with tf1.variable_scope("generator", reuse=tf1.AUTO_REUSE, custom_getter=getter):
            x = tf.cast(z, self.compute_dtype)
            x = linear(x, h16 * w16 * hp.gf_dim * 8, hp.init_stddev, "linear", bias=False)
            x = tf.reshape(x, [-1, h16, w16, hp.gf_dim * 8])
            x = bn_relu(x, "bn0")                                    # [N, 4, 4, gf_dim*8]
            # [N, 8, 8, gf_dim*4] -> [N, 16, 16, gf_dim*2] -> [N, 32, 32, gf_dim]
            for i, filters in enumerate((hp.gf_dim * 4, hp.gf_dim * 2, hp.gf_dim), start=1):
                x = bn_relu(deconv2d(x, filters, hp.init_stddev, f"deconv{i}", bias=False,
                                     kernel_size=hp.kernel_size),
                            f"bn{i}")
            x = deconv2d(x, 3, hp.init_stddev, "deconv4",
                         kernel_size=hp.kernel_size)                 # [N, 64, 64, 3]
            return tf.cast(tf.tanh(x), dtype)

    def discriminator(self, images, is_training, update_moving_stats=False):
        """D: images [N, output_h, output_w, 3] in [-1, 1] -> (probability, logits).

        Both outputs are float32 [N, 1]. D sees real and generated batches in
        two separate calls (each normalised with its own batch statistics, as
        in the classic DCGAN); only the call with `update_moving_stats` moves
        the moving averages, so two calls never race to update them.
        """
        hp = self.hp
        updates = (self.bn_updates["discriminator"]
                   if is_training and update_moving_stats else None)

        def bn_lrelu(x, name):
            return batch_norm(x, name, is_training, hp.bn_epsilon, hp.bn_momentum, updates,
                              lambda y: leaky_relu(y, hp.lrelu_slope))

        with tf1.variable_scope("discriminator", reuse=tf1.AUTO_REUSE):
            x = tf.cast(images, self.compute_dtype)
            x = leaky_relu(conv2d(x, hp.df_dim, hp.init_stddev, "conv0",
                                  kernel_size=hp.kernel_size),
                           hp.lrelu_slope)                           # [N, 32, 32, df_dim]
            # [N, 16, 16, df_dim*2] -> [N, 8, 8, df_dim*4] -> [N, 4, 4, df_dim*8]
            for i, filters in enumerate((hp.df_dim * 2, hp.df_dim * 4, hp.df_dim * 8), start=1):
                x = bn_lrelu(conv2d(x, filters, hp.init_stddev, f"conv{i}", bias=False,
                                    kernel_size=hp.kernel_size),
                             f"bn{i}")
            flat_size = x.shape[1] * x.shape[2] * x.shape[3]
            logits = linear(tf.reshape(x, [-1, flat_size]), 1, hp.init_stddev, "linear")
            logits = tf.cast(logits, tf.float32)  # losses are always computed in float32
            return tf.sigmoid(logits), logits

    def build_model(self, real_images, z):
        """Losses and D outputs of one training step.

        Args:
          real_images: float32 [N, output_h, output_w, 3] in [-1, 1].
          z: float32 [M, z_dim], uniform in [-1, 1).

        Returns:
          GanOutputs.
        """
        # D judges the images as G computed them: in bf16, a trip through
        # float32 and back would change no value and cost a cast each way,
        # forward and backward.
        generated = self.generator(z, is_training=True, dtype=self.compute_dtype)
        d_real_prob, d_real_logits = self.discriminator(real_images, True,
                                                        update_moving_stats=True)
        d_fake_prob, d_fake_logits = self.discriminator(generated, True)
        d_loss_real = cross_entropy(d_real_logits, self.hp.real_label)
        d_loss_fake = cross_entropy(d_fake_logits, 0.0)
        d_loss = d_loss_real + d_loss_fake
        g_loss = cross_entropy(d_fake_logits, 1.0)
        d_real = tf.reduce_mean(d_real_prob)
        d_fake = tf.reduce_mean(d_fake_prob)
        return GanOutputs(d_loss, d_loss_real, d_loss_fake, g_loss, d_real, d_fake,
                          d_real_logits, d_fake_logits, tf.cast(generated, tf.float32),
                          generated, d_real_prob, d_fake_prob)

    def summaries(self, outputs, z):
        """TensorBoard summaries of a step: (fetched with the D step, with the G step).

        Built from `outputs` after `optimizers` (which may replace g_loss);
        with several replicas, from their averaged losses.
        """
        summary = tf1.summary
        d_summary = summary.merge([
            summary.scalar("loss/d_loss", outputs.d_loss),
            summary.scalar("loss/d_loss_real", outputs.d_loss_real),
            summary.scalar("loss/d_loss_fake", outputs.d_loss_fake),
            summary.scalar("D/D_x", outputs.d_real),
            summary.scalar("D/D_G_z", outputs.d_fake),
            summary.histogram("hist/z", finite_or_zero(z)),
            summary.histogram("hist/D_x", finite_or_zero(outputs.d_real_prob)),
            summary.histogram("hist/D_G_z", finite_or_zero(outputs.d_fake_prob)),
            summary.scalar("train/learning_rate_d", tf.constant(self.hp.d_lr)),
        ])
        g_summary = summary.merge([
            summary.scalar("loss/g_loss", outputs.g_loss),
            summary.scalar("train/learning_rate_g", tf.constant(self.hp.g_lr)),
        ])
        return d_summary, g_summary

    def completion_losses(self, generated, known, weights):
        """Losses of semantic image completion (Yeh et al. 2017), per image.

        Args:
          generated: float32 [N, output_h, output_w, 3] in [-1, 1], G(z) in
            inference mode for the latent vectors being fitted.
          known: float32 [N, output_h, output_w, 3] in [-1, 1]: the images to
            complete (only pixels with a weight above 0 are ever compared).
          weights: float32 [N or 1, output_h, output_w], the contextual
            weight of each pixel (0 in the hole).

        Returns:
          (contextual [N], perceptual [N]):
          contextual is the weighted L1 distance to the known pixels;
          perceptual is G's own loss, -log D(G(z)), which keeps the fill a
          plausible face. Both networks run in inference mode.
        """
        _, logits = self.discriminator(generated, is_training=False)
        contextual = tf.reduce_sum(weights[..., None] * tf.abs(generated - known),
                                   axis=[1, 2, 3])
        perceptual = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.ones_like(logits), logits=logits)[:, 0]
        return contextual, perceptual

    def split_variables(self):
        """(generator variables, discriminator variables), trainable only.

        Split by scope prefix with the trailing slash, and checked to be
        disjoint and to cover every trainable variable of the graph.
        """
        trainable = tf1.trainable_variables()
        g_vars = [v for v in trainable if v.name.startswith("generator/")]
        d_vars = [v for v in trainable if v.name.startswith("discriminator/")]
        stray = set(trainable) - set(g_vars) - set(d_vars)
        if stray or set(g_vars) & set(d_vars):
            raise ValueError("trainable variables outside generator/ and discriminator/: "
                             + ", ".join(sorted(v.name for v in stray)))
        return g_vars, d_vars

    def network_variables(self):
        """{"generator": [...], "discriminator": [...]}: each network's weights and
        batch-norm statistics, the variables that define it.

        Selected by scope; the optimizers' slots, which share those scopes,
        are left out by taking the list before they exist (`optimizers` takes
        it first and keeps it).
        """
        if self._network_variables is None:
            self._network_variables = {scope: tf1.global_variables(scope + "/")
                                       for scope in ("generator", "discriminator")}
        return self._network_variables

    def optimizers(self, outputs, global_step, replicas=1):
        """Adam train ops: (d_train_op, g_train_op).

        With several replicas (call once in each), tf.distribute sums their
        gradients; each replica's loss is divided by `replicas` so that the
        update is the one of the mean loss over the whole global batch.

        Each op updates only its own network's variables and runs only its
        own network's batch-norm moving-average updates. The D op increments
        `global_step`, so the step counts training iterations. The G op then
        moves the generator's EMA shadows (see `ema_update`).

        With --schedule reuse_fake, the G op trains on the D update's own
        generated batch, judged again by D once D's update is done (so both
        ops go in one sess.run, and G(z) is computed once); `outputs.g_loss`
        then becomes that loss.
        """
        g_vars, d_vars = self.split_variables()
        network_variables = self.network_variables()  # before Adam adds its slots
        hp = self.hp

        def per_replica(loss):
            return loss / replicas if replicas > 1 else loss

        with tf.control_dependencies(self.bn_updates["discriminator"]):
            d_train_op = tf1.train.AdamOptimizer(hp.d_lr, beta1=hp.beta1,
                                                 name="d_adam").minimize(
                per_replica(outputs.d_loss), global_step=global_step, var_list=d_vars)
        if hp.schedule == "reuse_fake":
            # Every op of this second D pass, its weight reads included, waits
            # for D's update: the PyTorch DCGAN's G step sees the updated D.
            with tf.control_dependencies([d_train_op]):
                _, logits = self.discriminator(outputs.generated, is_training=True)
            outputs.g_loss = cross_entropy(logits, 1.0)
        with tf.control_dependencies(self.bn_updates["generator"]):
            g_adam_op = tf1.train.AdamOptimizer(hp.g_lr, beta1=hp.beta1,
                                                name="g_adam").minimize(
                per_replica(outputs.g_loss), var_list=g_vars)
        with tf.control_dependencies([g_adam_op]):
            g_train_op = self.ema_update(network_variables["generator"], global_step)
        return d_train_op, g_train_op

    def ema_update(self, variables, global_step):
        """Op moving the EMA shadow of each generator variable towards it.

        shadow -= (1 - decay) * (shadow - variable), for the weights and the
        batch-norm moving statistics alike. The decay ramps up as
        (1 + step) / (10 + step) until it reaches --g_ema_decay, so that a
        short run is not dominated by the initial weights. With a decay of 0
        the shadows are copies of the variables, and turning the average on
        or off is a training setting that can change on resume.
        """
        step = tf.cast(global_step, tf.float32)
        decay = tf.minimum(self.hp.g_ema_decay, (1.0 + step) / (10.0 + step))
        updates = []
        with tf1.name_scope("g_ema_update"):  # one name for all of its ops, for profiles
            for variable in variables:
                shadow = self._ema_shadow(variable)
                # One op writes each shadow in place. With several replicas,
                # `shadow.handle` is this replica's own copy: every copy of
                # the generator is the same after its update, so each
                # replica moves its own shadow and the copies stay equal,
                # where assign_sub on a mirrored variable would average the
                # update over the replicas, an all-reduce the size of the
                # generator on every step.
                if self.hp.g_ema_decay == 0:
                    # A copy, and exact, where shadow - (shadow - variable)
                    # rounds: the shadow shares the variable's buffer until
                    # the variable's next update copies it, one pass where
                    # the update below takes two.
                    updates.append(tf.raw_ops.AssignVariableOp(resource=shadow.handle,
                                                               value=variable))
                else:
                    updates.append(tf.raw_ops.ResourceApplyGradientDescent(
                        var=shadow.handle, alpha=1.0 - decay, delta=shadow - variable))
        return tf.group(*updates, name="g_ema_update")


def cross_entropy(logits, label):
    """Mean sigmoid cross-entropy of logits against one label for all."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), label), logits=logits))


def finite_or_zero(tensor):
    """The tensor with NaN and infinities replaced by 0, for histograms.

    TensorFlow's histogram op fails on NaN; a diverged step must reach the
    loop's own check of the losses and weights instead of failing there.
    """
    return tf.where(tf.math.is_finite(tensor), tensor, tf.zeros_like(tensor))


def images_from_uint8(images):
    """uint8 [N, H, W, 3] -> float32 in [-1, 1], inside the graph."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def images_to_uint8(images):
    """float32 in [-1, 1] -> uint8 [N, H, W, 3], rounded, inside the graph (the
    graph's twin of generate_face.to_uint8)."""
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0, 255), tf.uint8)


def tile_images(images, rows, cols):
    """Tile [rows*cols, H, W, C] images into one [1, rows*H, cols*W, C] picture."""
    _, height, width, channels = images.shape
    x = tf.reshape(images, [rows, cols, height, width, channels])
    x = tf.transpose(x, [0, 2, 1, 3, 4])
    return tf.reshape(x, [1, rows * height, cols * width, channels])
