"""Evaluation of trained runs on frozen embeddings, and heatmap localization scores.

Modules (import them by name; importing this package loads no torch):
- `embeddings`: load a run's encoder, compute and cache embeddings of a sample list.
- `knn`: weighted kNN (cosine, k=20, T=0.07) and top-k accuracy.
- `linear`: linear probe (logistic regression, weight decay chosen on a train-only validation split).
- `localization`: pointing game, energy in the box, IoU of thresholded maps, centre baseline.
- `heatmaps`: the full-image geometry and the single forward pass that yields every map.
- `report`: `evaluate_run` (eval.json, confusion.csv, classifier.pt) and `fit_classifier`.
- `few_labels`: top-1 from 1, 5, 10 labelled images per class (seeded draws).
- `scores`: the classifier report and few-label scores as a run folder keeps them (no torch).
- `suggest`: which unlabeled images to label next (TypiClust).
"""

# Here, not in few_labels, so that the command line can show it without loading torch.
DEFAULT_LABELS_PER_CLASS: tuple[int, ...] = (1, 5, 10)
