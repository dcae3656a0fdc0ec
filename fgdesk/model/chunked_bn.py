"""Batch norm whose statistics come from sub-batches: MoCo's shuffled batch norm in one pass.

MoCo normalises each key over a shuffled sub-batch so that batch statistics cannot
tell a query which key is its positive. Running the key encoder once per sub-batch
does that, but every convolution then sees a quarter of the batch and runs less
efficiently. Here only the batch-norm layers split the batch; everything else sees
all of it. The sub-batches, their statistics and the running-statistics updates are
those of the per-chunk loop (same `Tensor.chunk` boundaries, one update per chunk).
"""
from __future__ import annotations

import torch
from torch import nn

MIN_BN_CHUNK = 16  # batch norm over fewer images is mostly noise


def bn_chunk_count(batch: int, max_chunks: int) -> int:
    """Sub-batches for a batch: at most `max_chunks`, none smaller than MIN_BN_CHUNK."""
    return max(1, min(max_chunks, batch // MIN_BN_CHUNK))


class _ChunkedNorm:
    max_chunks: int = 1  # set by chunk_batch_norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = bn_chunk_count(x.shape[0], self.max_chunks)
        if not self.training or chunks == 1:
            return super().forward(x)
        normalise = super().forward
        # The chunks are consecutive in memory, so cat keeps channels_last.
        return torch.cat([normalise(part) for part in x.chunk(chunks)])


class ChunkedBatchNorm1d(_ChunkedNorm, nn.BatchNorm1d):
    pass


class ChunkedBatchNorm2d(_ChunkedNorm, nn.BatchNorm2d):
    pass


def chunk_batch_norms(module: nn.Module, max_chunks: int) -> nn.Module:
    """Turns `module` and every BatchNorm1d/2d inside it into the chunked form, in place.

    Parameters, buffers, names and order are kept, so state dicts and
    parameter-by-parameter momentum updates are unchanged.
    """
    for norm in module.modules():
        kind = {nn.BatchNorm1d: ChunkedBatchNorm1d, nn.BatchNorm2d: ChunkedBatchNorm2d}.get(type(norm))
        if kind is not None:
            # A subclass with no state of its own: swapping the class keeps every tensor
            # (and its identity) and changes only forward.
            norm.__class__ = kind
            norm.max_chunks = max_chunks
    return module
