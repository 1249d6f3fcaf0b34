"""A PyTorch DCGAN timed in a process of its own, for bench/train_speed.py.

PyTorch runs about half as fast in a process where a TensorFlow Session
has run (measured: the pytorch/examples DCGAN at half width, 0.19 s per
iteration alone, 0.45 s after a few TensorFlow steps in the same process),
so train_speed.py times each PyTorch model here, in a child process that
waits on its stdin while TensorFlow runs; rounds stay interleaved.

    python bench/torch_timer.py MODEL BATCH Z_DIM GF_DIM DF_DIM [keep_freed_memory]

MODEL is "reference" (bench/torch_reference.py, the same network as this
repo's, G(z) once an iteration as --schedule reuse_fake), "reference-bf16"
(the same under bf16 autocast), either with "-classic" (G(z) again for the
G update, as --schedule classic), or "example" (bench/torch_dcgan.py, the
pytorch/examples DCGAN). Each line "N" on stdin
runs N iterations and answers with their mean seconds on stdout. With
"keep_freed_memory" the child first imports hardware.py, which sets glibc's
malloc as this repo's scripts run (see hardware.keep_freed_memory); without
it, malloc is glibc's default, as the PyTorch scripts run by themselves.
"""

import subprocess
import sys
import time
from pathlib import Path

MODELS = ("reference", "reference-bf16", "reference-classic", "reference-bf16-classic",
          "example")


class TorchTimer:
    """The parent's handle on one child process (see the module docstring)."""

    def __init__(self, model, batch_size, z_dim, gf_dim, df_dim, keep_freed_memory=False):
        self.child = subprocess.Popen(
            [sys.executable, str(Path(__file__)), model, str(batch_size), str(z_dim),
             str(gf_dim), str(df_dim)] + (["keep_freed_memory"] if keep_freed_memory else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.child.stdout.readline().strip()  # after the model is built

    def seconds_per_iteration(self, iters):
        self.child.stdin.write(f"{iters}\n")
        self.child.stdin.flush()
        answer = self.child.stdout.readline()
        if not answer:
            raise RuntimeError(f"the PyTorch timing process ended (exit code "
                               f"{self.child.wait()})")
        return float(answer)

    def step(self):
        self.seconds_per_iteration(1)

    def close(self):
        self.child.stdin.close()
        self.child.wait()


def build(model, batch_size, z_dim, gf_dim, df_dim):
    import numpy as np
    if model == "example":
        import torch_dcgan
        images = np.random.default_rng(0).integers(0, 256, (512, 64, 64, 3), np.uint8)
        return torch_dcgan.PyTorchDCGAN(images, nz=z_dim, ngf=gf_dim, ndf=df_dim,
                                        batch_size=batch_size)
    from torch_reference import TorchDCGAN
    return TorchDCGAN(batch_size, z_dim, gf_dim, df_dim, bf16="-bf16" in model,
                      recompute_fake=model.endswith("-classic"))


def serve(argv):
    if argv[-1] == "keep_freed_memory":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import hardware
        assert hardware.MALLOC_KEEPS_FREED_MEMORY, "glibc's malloc was not set"
        argv = argv[:-1]
    import torch
    model, *sizes = argv
    if model not in MODELS:
        sys.exit(f"MODEL must be one of {', '.join(MODELS)}, got {model!r}")
    runner = build(model, *map(int, sizes))
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for line in sys.stdin:
        iters = int(line)
        started = time.perf_counter()
        for _ in range(iters):
            runner.step()
        print((time.perf_counter() - started) / iters, flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(serve(sys.argv[1:]))
