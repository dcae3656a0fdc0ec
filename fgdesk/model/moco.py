"""MoCo-style pretraining: query encoder, momentum key encoder, queue of negatives."""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fgdesk.config import RunConfig
from fgdesk.model.chunked_bn import bn_chunk_count, chunk_batch_norms
from fgdesk.model.heads import ProjectionHead
from fgdesk.model.losses import attention_consistency, info_nce
from fgdesk.model.network import FineGrainedNet

log = logging.getLogger(__name__)


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    positive_accuracy: torch.Tensor  # share of queries whose positive beats all negatives
    keys: torch.Tensor  # (B, proj_dim) keys of the first global view, for the queue
    ids: torch.Tensor  # (B,) image ids of those keys
    # The attention-consistency term before its weight (already in `loss`); None when off.
    attention_consistency: torch.Tensor | None = None


class EncoderWithHead(nn.Module):
    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.net = FineGrainedNet(cfg.model)
        self.head = ProjectionHead(self.net.embed_dim, cfg.model.proj_hidden, cfg.model.proj_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.net.embed(images)).float(), dim=1)


class MoCo(nn.Module):
    """Query/key encoders with a queue that remembers which image each key came from.

    Remembering ids lets a query ignore its own image's old keys, so the queue
    works even when it is larger than the dataset (moco issue #87).
    The keys of the current batch serve as extra negatives, which matters at the
    start of a run while the queue is still empty.
    """

    def __init__(self, cfg: RunConfig, queue_size: int | None = None) -> None:
        super().__init__()
        c = cfg.contrastive
        self.temperature = c.temperature
        self.decoupled = c.loss == "dcl"
        self.symmetric = c.symmetric
        self.consistency_weight = float(c.attention_consistency)
        if self.consistency_weight > 0 and (cfg.model.attention != "multiscale" or not self.symmetric):
            why = "model.attention is none, so there are no gates" if cfg.model.attention != "multiscale" else \
                "contrastive.symmetric is false, so only one view's map is computed"
            log.info("attention consistency is skipped: %s", why)  # the defaults set it for either kind
            self.consistency_weight = 0.0
        self.bn_chunks = c.shuffle_bn_chunks
        self.query = EncoderWithHead(cfg)
        # The key's batch norms normalise over sub-batches (shuffled in encode_keys).
        self.key = chunk_batch_norms(copy.deepcopy(self.query), self.bn_chunks)
        for param in self.key.parameters():
            param.requires_grad_(False)
        size = c.queue_size if queue_size is None else queue_size
        self.register_buffer("queue", F.normalize(torch.randn(size, cfg.model.proj_dim), dim=1))
        self.register_buffer("queue_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def net(self) -> FineGrainedNet:
        return self.query.net

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        for key_param, query_param in zip(self.key.parameters(), self.query.parameters()):
            key_param.mul_(momentum).add_(query_param.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """Keys with batch norm over shuffled sub-batches, so BN statistics cannot leak
        which key belongs to which query (MoCo's shuffle BN on a single device)."""
        # One pass over the whole batch: only the batch norms split it (chunked_bn).
        if bn_chunk_count(len(images), self.bn_chunks) == 1:
            return self.key(images)
        order = torch.randperm(len(images), device=images.device)
        return self.key(images[order])[torch.argsort(order)]

    def forward(self, global_views: list[torch.Tensor], local_views: list[torch.Tensor], ids: torch.Tensor,
                crops: torch.Tensor | None = None) -> ContrastiveOutput:
        """`crops` (B, 2, 5) says where each global view was cut from its image
        (AugmentedViews.crops); the attention-consistency term needs it."""
        count = len(global_views)
        # Symmetric: every global view is a query against the other's key. Asymmetric
        # (textbook MoCo v2): view 0 queries, view 1 keys, and nothing else is computed.
        query_views = list(range(count)) if self.symmetric else [0]
        key_views = sorted({(i + 1) % count for i in query_views})
        keys = {i: self.encode_keys(global_views[i]) for i in key_views}
        queue = self.queue.clone().detach()
        mask = self.negative_mask(ids)

        def loss_against(query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            negatives = torch.cat([key, queue])
            return info_nce(query, key, negatives, self.temperature, mask, self.decoupled)

        global_results, gate_scores = [], []
        for i in query_views:
            global_results.append(loss_against(self.query(global_views[i]), keys[(i + 1) % count]))
            gate_scores.append(self.query.net.attention.last_scores)
        local_queries = [self.query(view) for view in local_views]
        local_results = [loss_against(query, key) for query in local_queries for key in keys.values()]
        results = global_results + local_results
        loss = torch.stack([r[0] for r in results]).mean()
        accuracy = torch.stack([r[1] for r in global_results]).mean()
        consistency = None
        if self.consistency_weight > 0 and crops is not None:
            consistency = torch.stack([
                attention_consistency(first, second, crops[:, 0], crops[:, 1])
                for first, second in zip(gate_scores[0], gate_scores[1])
            ]).mean()
            loss = loss + self.consistency_weight * consistency
        return ContrastiveOutput(loss, accuracy, keys[key_views[0]], ids, consistency)

    def negative_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, B + K): True where a candidate negative comes from the query's own image,
        first among the batch's keys, then in the queue."""
        same_in_batch = ids.unsqueeze(0) == ids.unsqueeze(1)
        same_in_queue = self.queue_ids.unsqueeze(0) == ids.unsqueeze(1)
        return torch.cat([same_in_batch, same_in_queue], dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        size = self.queue.shape[0]
        if size == 0:
            return
        keys, ids = keys[-size:], ids[-size:]
        start = int(self.queue_ptr)
        positions = (torch.arange(len(keys), device=keys.device) + start) % size
        self.queue[positions] = keys.to(self.queue.dtype)
        self.queue_ids[positions] = ids
        self.queue_ptr.fill_((start + len(keys)) % size)


def cosine_momentum(base: float, progress: float) -> float:
    """EMA momentum rising from `base` to 1 along a half cosine (BYOL)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
