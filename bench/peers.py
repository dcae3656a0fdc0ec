"""The implementations fgdesk is compared against, on the same torchvision ResNet trunk.

- `LightlyMoCoV2`: MoCo v2 assembled from the `lightly` package's pieces, as its
  documentation does: `MoCoProjectionHead`, `NTXentLoss(memory_bank_size=...)`,
  `update_momentum`, `deactivate_requires_grad`.
- `PaperMoCo`: a plain loop written straight from Algorithm 1 of the MoCo paper
  (He et al., CVPR 2020) with the MoCo v2 MLP head: no shuffled batch norm, no
  masking of an image's own keys, a queue of (dim, K) updated in place.

Both expose the same small interface so the benchmarks can drive every variant
through one loop: `loss(views) -> Tensor`, `after_step(momentum)` (momentum update
and, for the paper loop, the queue), `features(images) -> Tensor` (pooled trunk
features, what kNN and the linear probe read), and `trainable()`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

TRUNK_DIM = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def resnet_trunk(name: str) -> nn.Sequential:
    """A randomly initialised torchvision ResNet without its classifier: (B, 3, H, W) -> (B, C, 1, 1)."""
    net = getattr(models, name)(weights=None)
    return nn.Sequential(*list(net.children())[:-1])


class LightlyMoCoV2(nn.Module):
    """MoCo v2 from lightly's building blocks (lightly's own MoCo example, optionally symmetric)."""

    def __init__(self, backbone: str = "resnet18", queue_size: int = 4096, temperature: float = 0.2,
                 hidden_dim: int = 512, out_dim: int = 128, symmetric: bool = False) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        dim = TRUNK_DIM[backbone]
        self.symmetric = symmetric
        self.backbone = resnet_trunk(backbone)
        self.projection_head = MoCoProjectionHead(dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, out_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(images).flatten(start_dim=1))

    def forward_momentum(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(images).flatten(start_dim=1)).detach()

    def loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        query = self(views[0])
        key = self.forward_momentum(views[1])
        if not self.symmetric:
            return self.criterion(query, key)
        query_2 = self(views[1])
        key_2 = self.forward_momentum(views[0])
        return 0.5 * (self.criterion(query, key) + self.criterion(query_2, key_2))

    @torch.no_grad()
    def after_step(self, momentum: float) -> None:
        # lightly's example updates the momentum encoder before the forward pass of the
        # next step; after this step's update is the same sequence of operations.
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).flatten(start_dim=1)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class PaperMoCo(nn.Module):
    """Algorithm 1 of the MoCo paper, with the v2 MLP head, as a reader would type it in."""

    def __init__(self, backbone: str = "resnet18", queue_size: int = 4096, temperature: float = 0.2,
                 hidden_dim: int = 512, out_dim: int = 128, symmetric: bool = False) -> None:
        super().__init__()
        dim = TRUNK_DIM[backbone]
        self.temperature = temperature
        self.symmetric = symmetric
        self.f_q = nn.Sequential(resnet_trunk(backbone), nn.Flatten(1),
                                 nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
        self.f_k = copy.deepcopy(self.f_q)  # f_k.params = f_q.params
        for param in self.f_k.parameters():
            param.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(out_dim, queue_size), dim=0))  # C x K
        self.queue_ptr = 0
        self._pending_keys: torch.Tensor | None = None

    def contrastive_loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n = q.shape[0]
        l_pos = torch.bmm(q.view(n, 1, -1), k.view(n, -1, 1)).view(n, 1)  # positive logits: Nx1
        l_neg = torch.mm(q, self.queue.clone().detach().to(q.dtype))  # negative logits: NxK
        logits = torch.cat([l_pos, l_neg], dim=1)  # Nx(1+K)
        labels = torch.zeros(n, dtype=torch.long, device=q.device)  # positives are the 0-th
        return F.cross_entropy(logits.float() / self.temperature, labels)

    def loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        x_q, x_k = views[0], views[1]
        q = F.normalize(self.f_q(x_q), dim=1)  # queries: NxC
        with torch.no_grad():
            k = F.normalize(self.f_k(x_k), dim=1)  # keys: NxC, no gradient to keys
        if not self.symmetric:
            self._pending_keys = k
            return self.contrastive_loss(q, k)
        q_2 = F.normalize(self.f_q(x_k), dim=1)
        with torch.no_grad():
            k_2 = F.normalize(self.f_k(x_q), dim=1)
        self._pending_keys = torch.cat([k, k_2])
        return 0.5 * (self.contrastive_loss(q, k) + self.contrastive_loss(q_2, k_2))

    @torch.no_grad()
    def after_step(self, momentum: float) -> None:
        # momentum update: key network
        for param_k, param_q in zip(self.f_k.parameters(), self.f_q.parameters()):
            param_k.data = param_k.data * momentum + param_q.data * (1.0 - momentum)
        # update dictionary: enqueue the current mini-batch, dequeue the earliest one
        keys = self._pending_keys
        if keys is None:
            return
        size = self.queue.shape[1]
        keys = keys[-size:].float()
        end = self.queue_ptr + len(keys)
        if end <= size:
            self.queue[:, self.queue_ptr:end] = keys.t()
        else:
            first = size - self.queue_ptr
            self.queue[:, self.queue_ptr:] = keys[:first].t()
            self.queue[:, : end - size] = keys[first:].t()
        self.queue_ptr = end % size
        self._pending_keys = None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.f_q[0](images).flatten(start_dim=1)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class PooledTrunk(nn.Module):
    """Wraps a `features` callable so `fgdesk.evaluate` helpers can embed with it: they read
    an encoder through `embed(images)` or `forward(images).embedding`, as on FineGrainedNet."""

    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.owner.features(images)

    def forward(self, images: torch.Tensor):
        from types import SimpleNamespace

        return SimpleNamespace(embedding=self.embed(images))
