"""Exponential moving average of network weights, with warm-up.

decay_t = min(rate, (1 + t) / (10 + t)): early on the average follows the weights
closely, later it averages over ~1/(1-rate) steps. (The published rate 0.1 kept 90 %
of the newest weights, i.e. no averaging.)
"""
import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, rate: float = 0.999):
        self.rate = float(rate)
        self.step = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def decay(self) -> float:
        return min(self.rate, (1 + self.step) / (10 + self.step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1 - d)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
        self.step += 1

    def state_dict(self) -> dict:
        return {"rate": self.rate, "step": self.step, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rate = float(state["rate"])
        self.step = int(state["step"])
        self.shadow.load_state_dict(state["shadow"])

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Follow the weights exactly (EMA's update_after: no averaging of the earliest steps)."""
        self.shadow.load_state_dict(model.state_dict())
        self.step += 1
