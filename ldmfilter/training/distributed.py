"""Collectives for distributed (DDP) training: batches gathered across processes with gradients.

Under Lightning's DDP every process holds a slice of each global batch (see
:class:`~ldmfilter.training.data.EpochShuffle`) and DDP averages the processes' gradients.  A
loss that is a mean over the batch needs nothing more: the average of the per-process means of
equal slices is the mean over the global batch.  The entropy estimators are not such means: each
needs the whole batch at once.  :func:`gather_batch` gives every process the global batch; its
gradient returns to each process the gradient of *all* processes' losses with respect to that
process's slice, so that, after DDP's averaging, training with ``N`` processes follows the
gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["process_rank", "gather_batch"]


def process_rank() -> int:
    """This process's global rank in a running torch.distributed process group, else 0."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherBatch(torch.autograd.Function):
    """``cat(all_gather(x))`` along dim 0; backward: sum the gradients of all processes, keep our slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # Σ over processes of ∂loss_p/∂(global batch)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch: every process's ``tensor`` stacked along dim 0, in rank order.

    Parameters
    ----------
    tensor : Tensor, shape (B, ...)
        This process's slice; the same shape on every process.  Boolean tensors are gathered
        without gradient.

    Returns
    -------
    Tensor, shape (N·B, ...)
        Differentiable (floating tensors): the gradient reaching ``tensor`` is the sum over all
        processes of their losses' gradients with respect to this slice.
    """
    if tensor.dtype == torch.bool:
        with torch.no_grad():
            return _GatherBatch.apply(tensor.to(torch.uint8)).bool()
    return _GatherBatch.apply(tensor)
