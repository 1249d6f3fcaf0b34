"""Write new faces from a trained checkpoint.

    python predict_gan.py                      # 8x8 grid -> face.png
    python predict_gan.py --num 1 --seed 7     # one 64x64 face

The graph is rebuilt from the hparams.json saved next to the checkpoints,
and the generator runs in inference mode (batch-norm moving averages).
"""

import argparse
import sys
from pathlib import Path

import tensorflow as tf

import generate_face
from gan_model import ganModel
from train_gan import (check_checkpoint_fits, latest_checkpoint,
                       load_run_hparams)

tf1 = tf.compat.v1


def find_checkpoint(ckpt_dir="ckpt", checkpoint=None):
    """The checkpoint to restore: `checkpoint` if given, else the newest in ckpt_dir.

    Raises:
      FileNotFoundError: there is none; the message says how to make one.
    """
    if checkpoint:
        if Path(checkpoint).is_dir():
            found = latest_checkpoint(checkpoint)
            if found is None:
                raise FileNotFoundError(f"no checkpoint in {checkpoint}")
            return found
        if not Path(str(checkpoint) + ".index").is_file():
            raise FileNotFoundError(
                f"checkpoint {checkpoint} not found (expected {checkpoint}.index); pass a "
                f"prefix such as ckpt/gan.ckpt-2000 or a folder of checkpoints")
        return str(checkpoint)
    found = latest_checkpoint(ckpt_dir)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint in {ckpt_dir}: train first, e.g. "
            f"`python train_gan.py --data_root data/demo_faces --ckpt_dir {ckpt_dir}`")
    return found


def generate(z, checkpoint, hparams, use_ema=True):
    """Run the trained generator on z.

    Args:
      z: float32 [N, z_dim], any N.
      checkpoint: checkpoint prefix (see `find_checkpoint`).
      hparams: the run's HParams (see `train_gan.load_run_hparams`).
      use_ema: use the moving average of G's weights if the run kept one
        (--g_ema_decay above 0); False: the trained weights.

    Returns:
      float32 images [N, output_h, output_w, 3] in [-1, 1].
    """
    if z.ndim != 2 or z.shape[1] != hparams.z_dim:
        raise ValueError(f"z should be [N, {hparams.z_dim}] for this checkpoint, "
                         f"got {list(z.shape)}")
    graph = tf.Graph()
    with graph.as_default():
        z_input = tf1.placeholder(tf.float32, [None, hparams.z_dim], name="z")
        images = ganModel(hparams).generator(
            z_input, is_training=False, use_ema=use_ema and hparams.g_ema_decay > 0)
        generator_vars = graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
        saver = tf1.train.Saver(generator_vars)
    check_checkpoint_fits(checkpoint, generator_vars)
    with tf1.Session(graph=graph) as sess:
        try:
            saver.restore(sess, checkpoint)
        except tf.errors.OpError as error:
            raise ValueError(
                f"checkpoint {checkpoint} cannot be read ({error.message.splitlines()[0]}); "
                f"pass an older one with --checkpoint") from error
        return sess.run(images, {z_input: z})


def predict(ckpt_dir="ckpt", checkpoint=None, num=64, seed=0, out="face.png", use_ema=True):
    """Write `num` faces from z sampled with `seed` as one grid PNG.

    Returns:
      (path written, checkpoint used).
    """
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    checkpoint = find_checkpoint(ckpt_dir, checkpoint)
    hparams = load_run_hparams(Path(checkpoint).parent)
    z = generate_face.sample_grid_z(seed, num, hparams.z_dim)
    images = generate(z, checkpoint, hparams, use_ema)
    return generate_face.save_grid(images, out), checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_dir", default="ckpt",
                        help="folder of a training run; its newest checkpoint is used")
    parser.add_argument("--checkpoint", default=None,
                        help="a specific checkpoint prefix (e.g. ckpt/gan.ckpt-2000)")
    parser.add_argument("--num", type=int, default=64,
                        help="faces to write, tiled in a grid (1: a single face)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the z vectors")
    parser.add_argument("--out", default="face.png", help="PNG file to write")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, got {args.seed}")
    try:
        out, used = predict(args.ckpt_dir, args.checkpoint, args.num, args.seed, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.num} face{'s' if args.num > 1 else ''} from {used})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
