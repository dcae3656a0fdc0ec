"""Linear probe: multinomial logistic regression on frozen embeddings.

Full-batch L-BFGS in torch on standardised features. The L2 weight decay is chosen
from a small grid on a stratified validation split carved from the *training*
embeddings only (the test split is never looked at), then the model is refit on all
training embeddings with that decay. The returned weight and bias act on the raw
embeddings (the standardisation is folded in), so `embedding @ weight.T + bias` are
the logits, and class-evidence maps can use the weight rows directly.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Strongest first: warm starts then move from a simple solution to sharper ones.
WEIGHT_DECAYS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
DEFAULT_WEIGHT_DECAY = 1e-3  # used when the training set is too small to hold out a validation split
VAL_FRACTION = 0.2
MAX_ITERATIONS = 100
# Candidates only need to be ranked, and each starts from the previous solution, so a
# short budget suffices; it bounds the cost on separable data, where weak decays would
# otherwise keep growing the weights for the whole budget.
SEARCH_ITERATIONS = 30


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (C, D), acts on raw embeddings
    bias: torch.Tensor  # (C,)
    weight_decay: float
    val_accuracy: dict[float, float] = field(default_factory=dict)  # per candidate decay
    val_loss: dict[float, float] = field(default_factory=dict)
    num_train: int = 0
    num_val: int = 0

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings.float().to(self.weight.device) @ self.weight.t() + self.bias

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.logits(embeddings).softmax(dim=1)


def stratified_split(labels: torch.Tensor, val_fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, validation indices): `val_fraction` of every class, chosen by a seeded shuffle.

    Classes with a single example stay entirely in the fit part; every class with two
    or more keeps at least one example on each side.
    """
    labels = labels.long().cpu()
    generator = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        take = 0 if len(members) < 2 else min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val.append(members[:take])
        fit.append(members[take:])
    fit_idx = torch.cat(fit).sort().values if fit else torch.zeros(0, dtype=torch.long)
    val_idx = torch.cat(val).sort().values if val else torch.zeros(0, dtype=torch.long)
    return fit_idx, val_idx


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)
    return mean, std


def _train(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    init: tuple[torch.Tensor, torch.Tensor] | None,
    max_iterations: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + weight_decay/2 * |W|^2 (bias not penalised) with L-BFGS."""
    dim = x.shape[1]
    if init is None:
        weight = torch.zeros(num_classes, dim, device=x.device)
        bias = torch.zeros(num_classes, device=x.device)
    else:
        weight, bias = init[0].clone(), init[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iterations, history_size=10,
        tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.t() + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _evaluate(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[float, float]:
    logits = x @ weight.t() + bias
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return accuracy, F.cross_entropy(logits, y).item()


def fit_linear(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    max_iterations: int = MAX_ITERATIONS,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
    quiet: bool = False,
) -> LinearProbe:
    """Fit a linear classifier on (N, D) training embeddings with labels in [0, num_classes).

    The test split is not an argument on purpose: model selection sees training data only.
    """
    if len(embeddings) == 0:
        raise ValueError("cannot fit a linear classifier on zero embeddings")
    say = log.debug if quiet else log.info  # quiet: one of many fits (few-label draws)
    device = torch.device(device)
    x_all = embeddings.float().to(device)
    y_all = labels.long().to(device)
    if int(y_all.min()) < 0 or int(y_all.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got {int(y_all.min())}..{int(y_all.max())}")
    decays = sorted({float(d) for d in weight_decays}, reverse=True)
    if len(decays) > 1:
        fit_idx, val_idx = stratified_split(labels, val_fraction, seed)
    else:  # a single candidate needs no choosing: no validation split, one fit on everything
        fit_idx, val_idx = torch.arange(len(labels)), torch.zeros(0, dtype=torch.long)
    steps = (len(decays) if len(val_idx) else 0) + 1
    done = 0
    val_accuracy: dict[float, float] = {}
    val_loss: dict[float, float] = {}
    chosen = decays[0] if len(decays) == 1 else DEFAULT_WEIGHT_DECAY
    start: tuple[torch.Tensor, torch.Tensor] | None = None
    if len(val_idx) and len(fit_idx) and decays:
        x_fit, y_fit = x_all[fit_idx.to(device)], y_all[fit_idx.to(device)]
        x_val, y_val = x_all[val_idx.to(device)], y_all[val_idx.to(device)]
        mean, std = _standardise(x_fit)
        z_fit, z_val = (x_fit - mean) / std, (x_val - mean) / std
        state = None
        best_key = (-math.inf, -math.inf)
        for decay in decays:
            state = _train(z_fit, y_fit, num_classes, decay, state, min(SEARCH_ITERATIONS, max_iterations))
            accuracy, loss = _evaluate(z_val, y_val, *state)
            val_accuracy[decay], val_loss[decay] = accuracy, loss
            # Highest accuracy; the validation loss breaks ties (small splits tie often);
            # on a full tie the stronger decay, seen first, stays.
            key = (accuracy, -loss)
            if key > best_key:
                best_key, chosen, start = key, decay, state
            done += 1
            if on_progress:
                on_progress(done, steps)
        say("linear probe: weight decay %g chosen on %d validation embeddings (accuracy %s)",
                 chosen, len(val_idx), ", ".join(f"{d:g}: {a:.3f}" for d, a in val_accuracy.items()))
    elif len(decays) > 1:
        say("linear probe: too few examples per class for a validation split; weight decay %g", chosen)

    mean, std = _standardise(x_all)
    # The refit starts from the chosen candidate: same decay, nearly the same scaling.
    weight, bias = _train((x_all - mean) / std, y_all, num_classes, chosen, start, max_iterations)
    if on_progress:
        on_progress(steps, steps)
    # Fold the standardisation into the parameters so they act on raw embeddings.
    weight = weight / std
    bias = bias - weight @ mean
    # Softmax ignores a vector added to every row; removing the mean row makes each row
    # "evidence for this class against the average class", which is what heatmaps show.
    weight = weight - weight.mean(dim=0, keepdim=True)
    bias = bias - bias.mean()
    return LinearProbe(
        weight=weight.cpu(), bias=bias.cpu(), weight_decay=chosen,
        val_accuracy=val_accuracy, val_loss=val_loss,
        num_train=len(x_all), num_val=len(val_idx),
    )
