"""An exponential moving average of the trained weights (``train.ema_decay``).

After optimiser step s (counted from 1) the average moves toward the weights by
``1 - min(decay, (1 + s) / (10 + s))``: the ramp keeps the first steps from being dominated by the
untrained start. The average is float32 whatever the training precision. Checkpoints keep it as
the pipeline's weights (what sampling and evaluation use) and the raw weights beside it for the
resume (dr.train.checkpoint).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def ema_rate(decay: float, step: int) -> float:
    """The decay applied at optimiser step ``step`` (1-based)."""
    return min(decay, (1 + step) / (10 + step))


class Ema:
    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.modules, self.decay = modules, decay
        self.shadow = {name: {k: v.detach().float().clone() for k, v in m.state_dict().items()}
                       for name, m in modules.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = ema_rate(self.decay, step)
        for name, m in self.modules.items():
            sh = self.shadow[name]
            for k, v in m.state_dict().items():
                if v.is_floating_point():
                    sh[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
                else:
                    sh[k].copy_(v)

    def load(self, name: str, state: dict[str, torch.Tensor]) -> None:
        self.shadow[name] = {k: v.float().clone() for k, v in state.items()}

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The modules hold the average inside the block, their own weights again after it."""
        raw = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in self.modules.items()}
        try:
            for name, m in self.modules.items():
                m.load_state_dict({k: v.to(raw[name][k].dtype) for k, v in self.shadow[name].items()})
            yield
        finally:
            for name, m in self.modules.items():
                m.load_state_dict(raw[name])
