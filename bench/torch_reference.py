"""The same DCGAN in PyTorch, as a yardstick for bench/train_speed.py.

Same layers as gan_model.py (5x5 kernels, stride 2, batch norm with momentum
0.9 in TensorFlow's convention, leaky ReLU 0.2, no bias before batch norm),
the same losses, Adam 2e-4 / beta1 0.5, and the same schedules: one D update
on a real and a generated batch, then one G update on the same G(z), judged
by the updated D (--schedule reuse_fake, the default, and the PyTorch DCGAN
example's way), or, with `recompute_fake`, on G(z) computed again
(--schedule classic).
Used only for timing; PyTorch is not a dependency of the project.
"""

import torch
from torch import nn


def generator(z_dim=100, gf_dim=64):
    def up(cin, cout, last=False):
        layers = [nn.ConvTranspose2d(cin, cout, 5, 2, padding=2, output_padding=1, bias=last)]
        if not last:
            layers += [nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), nn.ReLU()]
        return layers

    return nn.Sequential(
        nn.Linear(z_dim, 4 * 4 * gf_dim * 8, bias=False),
        nn.Unflatten(1, (gf_dim * 8, 4, 4)),
        nn.BatchNorm2d(gf_dim * 8, eps=1e-5, momentum=0.1), nn.ReLU(),
        *up(gf_dim * 8, gf_dim * 4), *up(gf_dim * 4, gf_dim * 2), *up(gf_dim * 2, gf_dim),
        *up(gf_dim, 3, last=True), nn.Tanh())


def discriminator(df_dim=64):
    def down(cin, cout, norm=True):
        layers = [nn.Conv2d(cin, cout, 5, 2, padding=2, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
        return layers + [nn.LeakyReLU(0.2)]

    return nn.Sequential(
        *down(3, df_dim, norm=False), *down(df_dim, df_dim * 2),
        *down(df_dim * 2, df_dim * 4), *down(df_dim * 4, df_dim * 8),
        nn.Flatten(), nn.Linear(4 * 4 * df_dim * 8, 1))


class TorchDCGAN:
    """One training iteration at a time, in fp32 or under bf16 autocast."""

    def __init__(self, batch_size=64, z_dim=100, gf_dim=64, df_dim=64, bf16=False, seed=0,
                 recompute_fake=False):
        torch.manual_seed(seed)
        self.g, self.d = generator(z_dim, gf_dim), discriminator(df_dim)
        self.g_opt = torch.optim.Adam(self.g.parameters(), 2e-4, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.d.parameters(), 2e-4, betas=(0.5, 0.999))
        self.loss = nn.BCEWithLogitsLoss()
        self.real = torch.rand(batch_size, 3, 64, 64) * 2 - 1
        self.z = torch.rand(batch_size, z_dim) * 2 - 1
        self.ones = torch.ones(batch_size, 1)
        self.zeros = torch.zeros(batch_size, 1)
        self.bf16, self.recompute_fake = bf16, recompute_fake

    def step(self):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            fake = self.g(self.z)
            d_loss = (self.loss(self.d(self.real).float(), self.ones)
                      + self.loss(self.d(fake.detach()).float(), self.zeros))
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if self.recompute_fake:
                fake = self.g(self.z)
            g_loss = self.loss(self.d(fake).float(), self.ones)
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        return d_loss.item(), g_loss.item()
