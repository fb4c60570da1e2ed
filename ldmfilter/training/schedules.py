"""Learning rates: the parameter groups' multipliers of the base rate, and schedules by optimiser step."""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["DEFAULT_LR_MULTIPLIERS", "SCHEDULES", "make_schedule"]

# the learning rate of each parameter group relative to the encoder's (see LDMTrainingModule)
DEFAULT_LR_MULTIPLIERS = {"encoder": 1.0, "predictor": 100.0, "residual": 100.0, "noise_head": 1.0, "observation": 100.0}
SCHEDULES = ("step", "linear", "cosine", "constant")


def make_schedule(kind: str, total_steps: int, warmup_fraction: float = 0.05) -> Callable[[int], float]:
    """Multiplier of the learning rate at optimiser step ``k``.

    Parameters
    ----------
    kind : {"step", "linear", "cosine", "constant"}
        ``"step"``: the paper's halving at 33% and again at 66% of training; ``"linear"``: decay
        to zero; ``"cosine"``: linear warm-up over ``warmup_fraction`` then cosine decay to zero.
    total_steps : int
    warmup_fraction : float
        Only for ``"cosine"``.

    Returns
    -------
    callable
        ``k ↦ multiplier``, usable with ``torch.optim.lr_scheduler.LambdaLR``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    total = max(int(total_steps), 1)
    if kind == "step":
        return lambda k: 0.5 ** ((k >= total / 3) + (k >= 2 * total / 3))
    if kind == "linear":
        return lambda k: max(0.0, 1.0 - k / total)
    if kind == "cosine":
        warmup = max(int(warmup_fraction * total), 1)

        def cosine(k: int) -> float:
            if k < warmup:
                return (k + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - warmup) / max(total - warmup, 1))))

        return cosine
    return lambda k: 1.0
