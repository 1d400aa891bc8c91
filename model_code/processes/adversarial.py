"""Generative adversarial neural operators (GANO; Rahman et al. 2022) behind the Process protocol.

A generator G (a neural operator) maps an input function z ~ N(0, C) (the project's white or
GRF noise) to a field; a functional critic D(u) = integral over [0,1]^2 of k(s) f(u)(s) ds
(f a neural operator with one output channel, k a small network of the coordinates) scores
fields. Both are resolution-independent, so a trained G samples at any resolution in one
network evaluation. Training is WGAN-GP written in function space (docs/maths.md):

    critic     -(E D(u) - E D(G(z))) + lambda_grad E (||dD/du (u_hat)||_L2 - 1)^2,
               u_hat = m u + (1 - m) G(z), m ~ U(0, 1) per example
    generator  -E D(G(z)), every n_critic-th step, after that step's critic update

The L2 norm of the functional derivative is a quadrature over the grid: with N grid points
each value u_i carries the weight 1/N, so dD/du(s_i) = N dD/du_i and
||dD/du||_L2 = sqrt(N sum_i (dD/du_i)^2), the same number at every resolution. (The
published code penalised the Euclidean norm of dD/du_i against 1/res, whose size falls
with the resolution, and drew m from N(0, 1) instead of U(0, 1).)
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..nets.neuralop_nets import grid_coordinates
from .base import Draw, Process

OUTPUTS = ("identity", "tanh")
PROBE_RESOLUTION = (32, 32)


def unconditioned(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A backbone net(x, c_noise) with its conditioning input held at zero (GANO has no noise level)."""
    return net(x, torch.zeros(len(x), device=x.device, dtype=x.dtype))


class FunctionalCritic(nn.Module):
    """D(u) = integral of k(s) f(u)(s) ds, the quadrature being the mean over the grid points.

    A linear functional of the operator's output, so D of the same function sampled on two
    grids agrees up to the quadrature error (the published critic's weight network, in our own form).
    """

    def __init__(self, operator: nn.Module, kernel_width: int = 16):
        super().__init__()
        self.operator = operator
        self.weight = nn.Sequential(nn.Linear(2, kernel_width), nn.GELU(), nn.Linear(kernel_width, kernel_width),
                                    nn.GELU(), nn.Linear(kernel_width, 1, bias=False))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        f = unconditioned(self.operator, u)                        # (B, 1, H, W)
        k = self.weight(grid_coordinates(u[:1])[0].permute(1, 2, 0)).squeeze(-1)   # (H, W)
        return (f[:, 0] * k).mean(dim=(-2, -1))                    # (B,)


class AdversarialModel(nn.Module):
    """The generator and the critic of one GANO run: what the trainer, the EMA and checkpoints hold.

    G(z) = out(a * F(z) + b), F the generator backbone, a and b learned per channel, out the
    identity or tanh. The backbones are initialised for EDM denoisers, whose raw output is tiny
    (std ~1e-3, all but constant in z); `calibrate` sets a and b once so that the initial G(z)
    has zero mean and unit standard deviation on a probe draw (as LSUV initialisation does), so
    the generator starts at the data's scale instead of spending its first thousand steps on it.
    """

    def __init__(self, generator: nn.Module, critic: FunctionalCritic, output: str = "identity", channels: int = 1):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"generator output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.generator, self.critic, self.output = generator, critic, output
        self.out_scale = nn.Parameter(torch.ones(channels))
        self.out_shift = nn.Parameter(torch.zeros(channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): one network evaluation on z's grid."""
        u = unconditioned(self.generator, z) * self.out_scale.view(1, -1, 1, 1) + self.out_shift.view(1, -1, 1, 1)
        return torch.tanh(u) if self.output == "tanh" else u

    def generator_parameters(self):
        """What the generator update steps: the backbone and the output map."""
        return [*self.generator.parameters(), self.out_scale, self.out_shift]

    @torch.no_grad()
    def calibrate(self, z: torch.Tensor) -> None:
        """Set a, b so that a F(z) + b has zero mean and unit standard deviation per channel over the probe z."""
        u = unconditioned(self.generator, z)
        mean, std = u.mean(dim=(0, 2, 3)), u.std(dim=(0, 2, 3)).clamp_min(1e-12)
        self.out_scale.copy_(1 / std)
        self.out_shift.copy_(-mean / std)


def function_space_norm(grad: torch.Tensor) -> torch.Tensor:
    """||g||_L2 over [0,1]^2 of the functional derivative whose grid gradient is `grad` (B, C, H, W)."""
    points = grad.shape[-1] * grad.shape[-2]
    # The small constant keeps the derivative of the square root finite at g = 0.
    return torch.sqrt(points * grad.pow(2).flatten(1).sum(1) + 1e-12)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """E (||dD/du(u_hat)||_L2 - 1)^2 at u_hat = m real + (1 - m) fake (Gulrajani et al. 2017, in function space)."""
    m = mix.view(-1, *([1] * (real.dim() - 1))).to(real)
    u = (m * real + (1 - m) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(u).sum(), u, create_graph=True)
    return (function_space_norm(grad) - 1).pow(2).mean()


class AdversarialProcess(Process):
    """GANO as a Process: wrap() pairs the generator backbone with a critic built from `critic`
    (a nets.describe_net description); train_step() makes the critic and generator updates."""

    name = "adversarial"

    def __init__(self, noise, critic: dict, n_critic: int = 10, lambda_grad: float = 10.0, kernel_width: int = 16,
                 output: str = "identity"):
        if int(n_critic) < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if output not in OUTPUTS:
            raise ValueError(f"generator output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.noise, self.critic = noise, dict(critic)
        self.n_critic, self.lambda_grad = int(n_critic), float(lambda_grad)
        self.kernel_width, self.output = int(kernel_width), output

    def wrap(self, net: nn.Module) -> AdversarialModel:
        from ..nets import net_from_description

        critic = FunctionalCritic(net_from_description(self.critic), self.kernel_width)
        model = AdversarialModel(net, critic, self.output, self.noise.channels)
        # A fixed probe (16 input functions at 32 px): the same initial model on every rank and every start.
        model.calibrate(self.noise.sample(16, PROBE_RESOLUTION, torch.Generator().manual_seed(0)))
        return model

    def _inputs(self, n: int, like: torch.Tensor, generator) -> torch.Tensor:
        return self.noise.sample(n, tuple(like.shape[2:]), generator, device=like.device, dtype=like.dtype)

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        """The critic's estimate of the Wasserstein distance, negated (the validation loss; no penalty)."""
        x = batch.x
        z = self._inputs(len(x), x, generator)
        estimate = model.critic(x[shard]).mean() - model.critic(model(z[shard])).mean()
        return Draw(-estimate, {"wasserstein": float(estimate.detach())})

    def train_step(self, model, batch, generator, shard, step, update) -> Draw:
        """One critic update and, every n_critic-th step, one generator update (the published order)."""
        x = batch.x
        if batch.labels is not None:
            raise ValueError("the adversarial process is unconditional; it takes no class labels")
        n = len(x)
        # Every draw is for the whole batch (all ranks consume the generator alike).
        z = self._inputs(n, x, generator)
        mix = torch.rand(n, generator=generator, device=generator.device)
        generator_turn = (step + 1) % self.n_critic == 0
        z_next = self._inputs(n, x, generator) if generator_turn else None
        real, fake = x[shard], model(z[shard]).detach()
        fake_score = model.critic(fake)
        estimate = model.critic(real).mean() - fake_score.mean()
        penalty = gradient_penalty(model.critic, real, fake, mix[shard])
        critic_loss = -estimate + self.lambda_grad * penalty
        update(critic_loss, model.critic.parameters())
        if generator_turn:
            generator_loss = -model.critic(model(z_next[shard])).mean()
            update(generator_loss, model.generator_parameters())
        else:
            generator_loss = -fake_score.mean()         # the generator's objective on this batch, not stepped
        return Draw(critic_loss.detach(), {"wasserstein": float(estimate.detach()), "penalty": float(penalty.detach()),
                                           "generator": float(generator_loss.detach())})

    @torch.no_grad()
    def sample(self, model, seeds: Sequence[int], shape: tuple, device, labels: Optional[torch.Tensor] = None,
               progress: bool = False) -> torch.Tensor:
        """G(z_k) with z_k from torch.Generator().manual_seed(seeds[k]), on the grid of `shape` (C, H, W)."""
        if labels is not None:
            raise ValueError("the adversarial process is unconditional; it takes no class labels")
        if len(shape) != 3 or int(shape[0]) != self.noise.channels:
            raise ValueError(f"sample shape must be (C, H, W) with C = {self.noise.channels}, got {tuple(shape)}")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        z = self.noise.sample(len(gens), tuple(shape[1:]), gens, device=device)
        return model(z).float().cpu()

    def describe(self) -> dict:
        return {"type": self.name, "noise": self.noise.describe(), "critic": self.critic,
                "n_critic": self.n_critic, "lambda_grad": self.lambda_grad, "kernel_width": self.kernel_width,
                "output": self.output}
