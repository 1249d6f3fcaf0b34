"""The pytorch/examples DCGAN (dcgan/main.py), written here for bench/race.py.

What it keeps from that example, as a user running it would get it:
  - G: ConvTranspose2d(nz, ngf*8, 4, 1, 0) from a 1x1 z, then three
    ConvTranspose2d(k=4, stride 2, padding 1) with BatchNorm and ReLU, and a
    last one to 3 channels with tanh; no biases.
  - D: Conv2d(k=4, stride 2, padding 1) to ndf, LeakyReLU 0.2; three more
    with BatchNorm; Conv2d(ndf*8, 1, 4, 1, 0) and a sigmoid; no biases.
  - Weights N(0, 0.02); BatchNorm scales N(1, 0.02), offsets 0.
  - z ~ N(0, 1); BCE on D's probabilities; real label 1, fake 0.
  - Adam, learning rate 2e-4, betas (0.5, 0.999), for both networks.
  - One iteration: D on a real batch and on G(z) (detached), then G on the
    same G(z) judged by the updated D.
PyTorch is a benchmark-only dependency (`pip install torch`); the project
itself does not use it.

bench/race.py trains it in a process of its own (`ExampleProcess`), as the
example runs by itself: no TensorFlow in the process, and glibc's malloc as
it comes (hardware.keep_freed_memory is this repo's, not the example's).

    python bench/torch_dcgan.py FACES.npy SEED NGF NDF [keep_freed_memory]

serves one model on stdin: "train SECONDS" trains until SECONDS of training
in all and answers with the iteration count; "sample NUM SEED PATH" writes
NUM uint8 faces to PATH (.npy) and answers "ok".
"""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _generator(nz, ngf):
    def up(cin, cout):
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(True)]
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())


def _discriminator(ndf):
    def down(cin, cout):
        return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


def _init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PyTorchDCGAN:
    """The example's training, one iteration at a time, on uint8 faces in memory.

    Args:
      images: uint8 [N, 64, 64, 3], already cropped and resized.
      seed: seeds torch (weights, z) and the batch order.
    """

    def __init__(self, images, seed=0, nz=100, ngf=64, ndf=64, batch_size=64):
        torch.manual_seed(seed)
        self.images, self.nz, self.batch_size = images, nz, batch_size
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self.rng.permutation(len(images)), 0
        self.g, self.d = _generator(nz, ngf), _discriminator(ndf)
        self.g.apply(_init_weights)
        self.d.apply(_init_weights)
        self.loss = nn.BCELoss()
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def _real_batch(self):
        """The next batch: each epoch visits the faces in a new order, in whole
        batches (the example's DataLoader also yields a last, smaller one)."""
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = self.rng.permutation(len(self.images)), 0
        picked = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        pixels = torch.from_numpy(self.images[picked]).permute(0, 3, 1, 2).float()
        return pixels / 127.5 - 1.0

    def step(self):
        real = self._real_batch()
        batch = real.shape[0]
        ones, zeros = torch.ones(batch), torch.zeros(batch)
        # (1) Update D: maximise log D(x) + log(1 - D(G(z))).
        self.d.zero_grad()
        d_real = self.d(real).view(-1)
        loss_real = self.loss(d_real, ones)
        loss_real.backward()
        fake = self.g(torch.randn(batch, self.nz, 1, 1))
        d_fake = self.d(fake.detach()).view(-1)
        loss_fake = self.loss(d_fake, zeros)
        loss_fake.backward()
        self.d_opt.step()
        # (2) Update G: maximise log D(G(z)), the same G(z), the updated D.
        self.g.zero_grad()
        g_loss = self.loss(self.d(fake).view(-1), ones)
        g_loss.backward()
        self.g_opt.step()
        return (loss_real + loss_fake).item(), g_loss.item()

    def sample(self, num, seed=0, chunk=64):
        """uint8 [num, 64, 64, 3] faces from a fixed z, as the example draws its
        sample grids (G in training mode, batch statistics), in batches of
        `chunk`; G's running statistics are left as they were."""
        saved = {k: v.clone() for k, v in self.g.state_dict().items()}
        generator = torch.Generator().manual_seed(seed)
        out = []
        with torch.no_grad():
            for start in range(0, num, chunk):
                count = min(chunk, num - start)
                z = torch.randn(count, self.nz, 1, 1, generator=generator)
                out.append(self.g(z).permute(0, 2, 3, 1).numpy())
        self.g.load_state_dict(saved)
        pixels = np.rint((np.concatenate(out) + 1.0) * 127.5)
        return np.clip(pixels, 0, 255).astype(np.uint8)


class ExampleProcess:
    """PyTorchDCGAN in a child process (see the module docstring), with the
    same train-then-sample use as in-process: the clock is the child's own
    training loop."""

    def __init__(self, faces_path, seed, ngf, ndf, keep_freed_memory=False):
        self.child = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(faces_path), str(seed), str(ngf),
             str(ndf)] + (["keep_freed_memory"] if keep_freed_memory else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self._answer()  # once the model is built

    def _answer(self, command=None):
        if command:
            self.child.stdin.write(command + "\n")
            self.child.stdin.flush()
        answer = self.child.stdout.readline()
        if not answer:
            raise RuntimeError(f"the PyTorch example's process ended (exit code "
                               f"{self.child.wait()})")
        return answer.strip()

    def train_until(self, seconds):
        """Train until `seconds` of training in all; the iterations so far."""
        return int(self._answer(f"train {seconds}"))

    def sample(self, num, seed, path):
        self._answer(f"sample {num} {seed} {path}")
        return np.load(path)

    def close(self):
        self.child.stdin.close()
        self.child.wait()


def serve(faces_path, seed, ngf, ndf, *options):
    if options == ("keep_freed_memory",):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import hardware
        assert hardware.MALLOC_KEEPS_FREED_MEMORY, "glibc's malloc was not set"
    model = PyTorchDCGAN(np.load(faces_path), seed=int(seed), ngf=int(ngf), ndf=int(ndf))
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    trained, steps = 0.0, 0
    for line in sys.stdin:
        command, *values = line.split()
        if command == "train":
            started = time.monotonic()
            while trained + time.monotonic() - started < float(values[0]):
                model.step()
                steps += 1
            trained += time.monotonic() - started
            print(steps, flush=True)
        elif command == "sample":
            np.save(values[2], model.sample(int(values[0]), seed=int(values[1])))
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve(*sys.argv[1:]))
