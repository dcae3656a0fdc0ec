#!/usr/bin/env python3
"""Finding wrong labels on real data: planted mistakes in cub50, found by fgdesk and by cleanlab.

Every labelled image of cub50 (training and test split) is embedded once, by a run trained
on it (`--run`) and by the same network at random initialisation. Then, for each seed and
each noise rate, a share of the labels is made wrong on purpose, in one of two ways:

- uniform:     the wrong class is any other class;
- confusable:  the wrong class is the next species in CUB's own order (classes there are
               grouped by family, so a neighbour is usually a close relative: the kind of
               mistake a person makes).

Each finder ranks the images it thinks mislabelled:

- fgdesk linear: `fgdesk.evaluate.label_check` (5-fold linear probe, confident learning);
- fgdesk knn:    the same with leave-one-out kNN probabilities (no fitting);
- cleanlab:      the peer library end to end, as its documentation does it for embeddings:
                 scikit-learn's logistic regression, 5-fold cross-validated probabilities
                 (`estimate_cv_predicted_probabilities`), then `find_label_issues`;
- cleanlab filter on fgdesk's probabilities: checks fgdesk's thresholds against cleanlab's.

Scores: precision among the first P ranked (P = the number planted; random ranking scores the
noise rate), precision and recall of everything flagged, how often the suggested class is the
true one, and seconds. cub50's own labels are taken as right; the few real mistakes CUB has
(about 4% by its authors' estimate) count against every finder alike.

    python3 dev.py bench bench/label_check.py --run RUN          # a run trained on cub50
    python3 dev.py bench bench/label_check.py --quick            # random-init features, one seed, 5% only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Report, format_table, progress, quiet_logging, relative, resolve_data, set_threads, summarize  # noqa: E402

from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.evaluate.label_check import cross_validated_probabilities, find_label_issues  # noqa: E402
from fgdesk.model.network import FineGrainedNet  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402

FOLDS = 5


def plant_noise(labels: torch.Tensor, num_classes: int, rate: float, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy labels, indices made wrong)."""
    generator = torch.Generator().manual_seed(seed)
    count = round(rate * len(labels))
    chosen = torch.randperm(len(labels), generator=generator)[:count]
    noisy = labels.clone()
    if kind == "uniform":
        shift = torch.randint(1, num_classes, (count,), generator=generator)
        noisy[chosen] = (labels[chosen] + shift) % num_classes
    else:  # the next class in the dataset's order (the previous one for the last class)
        nxt = labels[chosen] + 1
        noisy[chosen] = torch.where(nxt < num_classes, nxt, labels[chosen] - 1)
    return noisy, chosen


def score(ranked: list[int], suggested: dict[int, int], planted: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    wrong = set(planted.tolist())
    top = ranked[: len(wrong)]
    found = [i for i in ranked if i in wrong]
    return {
        "flagged": len(ranked),
        "precision_at_planted": len([i for i in top if i in wrong]) / max(1, len(wrong)),
        "precision": len(found) / max(1, len(ranked)),
        "recall": len(found) / max(1, len(wrong)),
        "right_suggestion": (sum(1 for i in found if suggested.get(i) == int(truth[i])) / len(found)) if found else None,
    }


def fgdesk_finder(method: str):
    def find(vectors, noisy, num_classes, seed):
        probabilities = cross_validated_probabilities(vectors, noisy, num_classes, method, FOLDS, seed)
        issues = find_label_issues(probabilities, noisy)
        return [i.index for i in issues], {i.index: i.suggested for i in issues}, probabilities
    return find


def cleanlab_end_to_end(vectors, noisy, num_classes, seed):
    from cleanlab.count import estimate_cv_predicted_probabilities
    from cleanlab.filter import find_label_issues as cl_find
    from sklearn.linear_model import LogisticRegression

    features = vectors.numpy()
    labels = noisy.numpy()
    probabilities = estimate_cv_predicted_probabilities(
        features, labels, clf=LogisticRegression(max_iter=1000), cv_n_folds=FOLDS, seed=seed)
    ranked = cl_find(labels, probabilities, return_indices_ranked_by="self_confidence").tolist()
    return ranked, likeliest_other(torch.from_numpy(probabilities), noisy, ranked), None


def likeliest_other(probabilities: torch.Tensor, given: torch.Tensor, rows: list[int]) -> dict[int, int]:
    """The class each flagged image looks most like besides its given one (cleanlab names none)."""
    others = probabilities.clone().float()
    others[torch.arange(len(given)), given] = -1.0
    return {int(i): int(others[i].argmax()) for i in rows}


def cleanlab_filter_on(probabilities: torch.Tensor, noisy: torch.Tensor) -> tuple[list[int], dict[int, int]]:
    from cleanlab.filter import find_label_issues as cl_find

    ranked = cl_find(noisy.numpy(), probabilities.numpy(), return_indices_ranked_by="self_confidence").tolist()
    return ranked, likeliest_other(probabilities, noisy, ranked)


def embed_dataset(data: Path, run: Path | None, seed: int) -> dict[str, Any]:
    index = detect(data, check_images=False)
    samples = [s for s in index.samples if s.label >= 0]
    features: dict[str, Any] = {}
    if run is not None:
        net, config, _ = load_encoder(run)
        size = config.data.eval_size
        progress(f"embedding {len(samples)} images with {run.name}")
        started = time.perf_counter()
        embedded = compute_embeddings(net, samples, size, crop_bottom=index.crop_bottom, num_workers=1)
        features["trained"] = {"vectors": embedded.vectors.float(), "labels": embedded.labels,
                               "embed_s": time.perf_counter() - started}
        model_config = config.model
    else:
        config = default_config(str(data), len(samples))
        size, model_config = config.data.eval_size, config.model
    torch.manual_seed(seed)
    net = FineGrainedNet(model_config.__class__(**{**model_config.__dict__, "weights": "random"})).eval()
    progress(f"embedding {len(samples)} images at random initialisation")
    embedded = compute_embeddings(net, samples, size, crop_bottom=index.crop_bottom, num_workers=1)
    features["random"] = {"vectors": embedded.vectors.float(), "labels": embedded.labels}
    return {"features": features, "num_classes": len(index.classes), "images": len(samples), "eval_size": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CUB-layout dataset (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--run", type=Path, default=None, help="a run trained on that dataset (read, not changed)")
    parser.add_argument("--rates", default="0.05,0.10", help="shares of labels made wrong")
    parser.add_argument("--kinds", default="uniform,confusable")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="skip cleanlab")
    parser.add_argument("--quick", action="store_true", help="random-init features, one seed, 5%% uniform")
    args = parser.parse_args()
    if args.quick:
        args.run, args.rates, args.kinds, args.seeds = None, "0.05", "uniform", "0"
    threads = set_threads(args.threads)
    data = resolve_data(args.data)
    rates = [float(r) for r in args.rates.split(",")]
    kinds = args.kinds.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    run_epochs = None
    if args.run is not None:
        from fgdesk.train import runs

        run_epochs = runs.read_state(args.run).get("epochs_done")
    # The run by name and length: its folder is a path on this machine.
    report = Report("label_check", {"data": relative(data), "run": args.run.name if args.run else None,
                                    "run_epochs": run_epochs, "rates": rates, "kinds": kinds, "seeds": seeds,
                                    "folds": FOLDS, "threads": threads})
    with quiet_logging():
        dataset = embed_dataset(data, args.run, seeds[0])
    num_classes = dataset["num_classes"]
    finders = {"fgdesk linear": fgdesk_finder("linear"), "fgdesk knn": fgdesk_finder("knn")}
    if not args.no_peer:
        finders["cleanlab"] = cleanlab_end_to_end
    records: list[dict[str, Any]] = []
    for feature_name, feature in dataset["features"].items():
        truth = feature["labels"]
        for kind in kinds:
            for rate in rates:
                for seed in seeds:
                    noisy, planted = plant_noise(truth, num_classes, rate, kind, seed)
                    for finder_name, finder in finders.items():
                        progress(f"{feature_name} features, {kind} {rate:.0%}, seed {seed}: {finder_name}")
                        started = time.perf_counter()
                        with quiet_logging():
                            ranked, suggested, probabilities = finder(feature["vectors"], noisy, num_classes, seed)
                        seconds = time.perf_counter() - started
                        records.append({"features": feature_name, "kind": kind, "rate": rate, "seed": seed,
                                        "finder": finder_name, "seconds": seconds, "planted": len(planted),
                                        **score(ranked, suggested, planted, truth)})
                        if finder_name == "fgdesk linear" and not args.no_peer:
                            ranked, suggested = cleanlab_filter_on(probabilities, noisy)
                            records.append({"features": feature_name, "kind": kind, "rate": rate, "seed": seed,
                                            "finder": "cleanlab filter on fgdesk linear's probabilities", "seconds": None,
                                            "planted": len(planted), **score(ranked, suggested, planted, truth)})

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["features"], record["kind"], record["rate"], record["finder"]), []).append(record)
    summary, rows = [], []
    for (feature_name, kind, rate, finder_name), members in groups.items():
        entry = {"features": feature_name, "kind": kind, "rate": rate, "finder": finder_name, "seeds": len(members)}
        for key in ("precision_at_planted", "precision", "recall", "right_suggestion", "seconds", "flagged"):
            entry[key] = summarize(m[key] for m in members)
        summary.append(entry)

        def spread(key: str) -> str:
            stats = entry[key]
            if stats["mean"] is None:
                return "-"
            return f"{100 * stats['mean']:.1f}" + (f" ± {100 * stats['std']:.1f}" if stats.get("std") else "")

        rows.append({"features": feature_name, "noise": f"{kind} {rate:.0%}", "finder": finder_name,
                     "p_at_planted": spread("precision_at_planted"), "precision": spread("precision"),
                     "recall": spread("recall"), "right_class": spread("right_suggestion"),
                     "flagged": f"{entry['flagged']['mean']:.0f}",
                     "seconds": "-" if entry["seconds"]["mean"] is None else f"{entry['seconds']['mean']:.1f}"})
    ratios = {}
    for entry in summary:
        if entry["finder"] != "fgdesk linear":
            continue
        peer = next((e for e in summary if e["finder"] == "cleanlab" and
                     (e["features"], e["kind"], e["rate"]) == (entry["features"], entry["kind"], entry["rate"])), None)
        if peer is None:
            continue
        key = f"{entry['features']} {entry['kind']} {entry['rate']:.0%}"
        ratios[key] = {
            "precision_at_planted_points": 100 * (entry["precision_at_planted"]["mean"] - peer["precision_at_planted"]["mean"]),
            "speed_ratio": peer["seconds"]["mean"] / entry["seconds"]["mean"] if entry["seconds"]["mean"] else None,
        }
    table = format_table(rows, [("features", "features"), ("noise", "noise"), ("finder", "finder"),
                                ("p_at_planted", "P@planted %"), ("precision", "precision %"), ("recall", "recall %"),
                                ("right_class", "right class %"), ("flagged", "flagged"), ("seconds", "s")],
                         title=f"wrong labels planted in cub50 ({dataset['images']} images, {num_classes} classes); "
                               "random ranking scores the noise rate at P@planted")
    notes = [f"precision at P: of the first P images ranked (P = the number planted), the share really mislabelled; "
             f"a random ranking scores the noise rate. mean ± std over {len(seeds)} seed(s)."]
    if "trained" in dataset["features"]:
        notes.append(f"embedding the {dataset['images']} images with the trained run took "
                     f"{dataset['features']['trained']['embed_s']:.0f} s (done once; the app reuses the run's cache)")
    report.write({"images": dataset["images"], "classes": num_classes, "eval_size": dataset["eval_size"],
                  "summary": summary, "fgdesk_linear_vs_cleanlab": ratios, "records": records},
                 tables=[table], notes=notes, filename="label_check_quick.json" if args.quick else None, print_json=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
