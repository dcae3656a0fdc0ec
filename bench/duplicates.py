#!/usr/bin/env python3
"""Finding copies on real data: copies planted in cub50, found by fgdesk and by a perceptual hash.

For each seed, images of cub50 are copied with one of seven edits (10 images per edit, into
a temporary folder; the dataset is never touched):

- resaved:     JPEG at quality 50;
- resized:     half the size, JPEG at 85;
- mirrored:    flipped left to right;
- brightened:  brightness +30%, contrast +20%;
- crop90:      the centre 90% of each side;
- crop80:      80% of each side, at a random offset;
- crop+resave: 85% of each side at a random offset, resized to 70%, JPEG at 70.

Each finder then looks for copies among the 2,952 originals and the 70 copies:

- fgdesk pixels:          `fgdesk.evaluate.duplicates` without a network (`fgdesk duplicates DATA`);
- fgdesk + run:           the same, with a run trained on cub50 proposing pairs (`fgdesk duplicates RUN`);
- fgdesk + random init:   the same network at random initialisation proposing them;
- imagehash pHash:        the perceptual hash most duplicate finders use (imagehash, in the
                          bench extra), pairs within 8 of its 64 bits.

Scores: the share of planted copies found with their original (per edit and overall); the
pairs found among the originals themselves (cub50 holds real copies; the first are listed to
check by eye); pairs that join a planted copy to the wrong image; seconds.

    python3 dev.py bench bench/duplicates.py --run RUN     # a run trained on cub50
    python3 dev.py bench bench/duplicates.py --quick       # one seed, no run
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Report, format_table, progress, quiet_logging, relative, resolve_data, set_threads, summarize  # noqa: E402

from fgdesk.data.layouts import Sample, detect  # noqa: E402
from fgdesk.evaluate.duplicates import find_duplicate_pairs, grey_thumbnails  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.model.network import FineGrainedNet  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402

EDITS = ("resaved", "resized", "mirrored", "brightened", "crop90", "crop80", "crop+resave")
PER_EDIT = 10
PHASH_BITS = 8  # pHash pairs within this Hamming distance count as copies


def make_copy(image, edit: str, rng: random.Random):
    """(edited PIL image, JPEG quality or None for PNG)."""
    from PIL import Image, ImageEnhance, ImageOps

    width, height = image.size

    def crop(share: float, centred: bool):
        w, h = round(width * share), round(height * share)
        left = (width - w) // 2 if centred else rng.randint(0, width - w)
        top = (height - h) // 2 if centred else rng.randint(0, height - h)
        return image.crop((left, top, left + w, top + h))

    if edit == "resaved":
        return image, 50
    if edit == "resized":
        return image.resize((width // 2, height // 2), Image.Resampling.BICUBIC), 85
    if edit == "mirrored":
        return ImageOps.mirror(image), None
    if edit == "brightened":
        return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.3)).enhance(1.2), None
    if edit == "crop90":
        return crop(0.9, True), None
    if edit == "crop80":
        return crop(0.8, False), None
    cropped = crop(0.85, False)
    return cropped.resize((round(cropped.width * 0.7), round(cropped.height * 0.7)), Image.Resampling.BICUBIC), 70


def plant(samples: list[Sample], folder: Path, seed: int) -> list[tuple[int, str, Path]]:
    """(index of the original, edit, copy's path) for PER_EDIT copies of each edit."""
    from PIL import Image

    rng = random.Random(seed)
    chosen = rng.sample(range(len(samples)), PER_EDIT * len(EDITS))
    planted = []
    for number, original in enumerate(chosen):
        edit = EDITS[number // PER_EDIT]
        with Image.open(samples[original].path) as opened:
            copy, quality = make_copy(opened.convert("RGB"), edit, rng)
        path = folder / f"copy_{number:03d}.{'jpg' if quality else 'png'}"
        if quality:
            copy.save(path, quality=quality)
        else:
            copy.save(path)
        planted.append((original, edit, path))
    return planted


def embed(net: FineGrainedNet, paths: list[Path], size: int) -> torch.Tensor:
    samples = [Sample(path, -1, "unlabeled") for path in paths]
    embedded = compute_embeddings(net, samples, size, num_workers=1)
    assert not embedded.bad, embedded.bad
    return embedded.vectors.float()


def phash_pairs(paths: list[Path]) -> tuple[set[tuple[int, int]], float]:
    import imagehash
    import numpy as np
    from PIL import Image

    started = time.perf_counter()
    hashes = []
    for path in paths:
        with Image.open(path) as image:
            hashes.append(np.packbits(imagehash.phash(image).hash.flatten()))
    bits = torch.from_numpy(np.unpackbits(np.stack(hashes), axis=1).astype(np.float32))
    # Hamming distance of every pair at once: differing bits = a + b - 2 (a . b)
    ones = bits.sum(dim=1)
    distance = ones[:, None] + ones[None, :] - 2 * bits @ bits.t()
    close = torch.nonzero(torch.triu(distance <= PHASH_BITS, diagonal=1)).tolist()
    return {(int(i), int(j)) for i, j in close}, time.perf_counter() - started


def fgdesk_pairs(grey: torch.Tensor, vectors: torch.Tensor | None) -> tuple[set[tuple[int, int]], float]:
    started = time.perf_counter()
    found = find_duplicate_pairs(grey, vectors)
    return {(p.first, p.second) for p in found}, time.perf_counter() - started


def score(pairs: set[tuple[int, int]], planted: list[tuple[int, str, Path]], originals: int) -> dict[str, Any]:
    by_edit: dict[str, list[bool]] = {}
    copy_rows = {originals + k: original for k, (original, _, _) in enumerate(planted)}
    for k, (original, edit, _) in enumerate(planted):
        by_edit.setdefault(edit, []).append((min(original, originals + k), max(original, originals + k)) in pairs)
    wrong_partner = [p for p in pairs if (p[0] >= originals or p[1] >= originals)
                     and not any(copy in p and copy_rows[copy] in p for copy in copy_rows)
                     and not (p[0] >= originals and p[1] >= originals)]
    among_originals = sorted(p for p in pairs if p[0] < originals and p[1] < originals)
    return {
        "found": sum(sum(v) for v in by_edit.values()) / max(1, len(planted)),
        "found_by_edit": {edit: sum(v) / len(v) for edit, v in by_edit.items()},
        "pairs_among_originals": len(among_originals),
        "wrong_partner": len(wrong_partner),
        "_among_originals": among_originals,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CUB-layout dataset (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--run", type=Path, default=None, help="a run trained on that dataset (read, not changed)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="skip imagehash")
    parser.add_argument("--quick", action="store_true", help="one seed, no run")
    args = parser.parse_args()
    if args.quick:
        args.run, args.seeds = None, "0"
    threads = set_threads(args.threads)
    data = resolve_data(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    index = detect(data, check_images=False)
    samples = [s for s in index.samples if s.label >= 0]
    run_epochs = None
    if args.run is not None:
        from fgdesk.train import runs

        run_epochs = runs.read_state(args.run).get("epochs_done")
    report = Report("duplicates", {"data": relative(data), "run": args.run.name if args.run else None,
                                   "run_epochs": run_epochs, "seeds": seeds, "per_edit": PER_EDIT,
                                   "phash_bits": PHASH_BITS, "threads": threads})
    networks: dict[str, tuple[FineGrainedNet, int]] = {}
    with quiet_logging():
        if args.run is not None:
            net, config, _ = load_encoder(args.run)
            networks["run"] = (net, config.data.eval_size)
            model_config, size = config.model, config.data.eval_size
        else:
            config = default_config(str(data), len(samples))
            model_config, size = config.model, config.data.eval_size
        torch.manual_seed(0)
        networks["random init"] = (FineGrainedNet(model_config.__class__(
            **{**model_config.__dict__, "weights": "random"})).eval(), size)

    paths = [s.path for s in samples]
    progress(f"reading {len(paths)} images")
    started = time.perf_counter()
    grey_originals, bad = grey_thumbnails(paths)
    read_s = time.perf_counter() - started
    assert not bad, bad
    original_vectors = {}
    for name, (net, size) in networks.items():
        progress(f"embedding {len(paths)} images ({name})")
        with quiet_logging():
            original_vectors[name] = embed(net, paths, size)

    records: list[dict[str, Any]] = []
    found_among_originals: dict[str, list[tuple[int, int]]] = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="fgdesk-copies-") as folder:
            planted = plant(samples, Path(folder), seed)
            copies = [path for _, _, path in planted]
            grey_copies, bad = grey_thumbnails(copies)
            assert not bad, bad
            grey = torch.cat([grey_originals, grey_copies])
            vectors = {name: torch.cat([original_vectors[name], embed(net, copies, size)])
                       for name, (net, size) in networks.items()}
            finders: dict[str, Any] = {"fgdesk pixels": lambda: fgdesk_pairs(grey, None)}
            for name in networks:
                finders[f"fgdesk + {name}"] = lambda name=name: fgdesk_pairs(grey, vectors[name])
            if not args.no_peer:
                finders["imagehash pHash"] = lambda: phash_pairs(paths + copies)
            for finder, call in finders.items():
                progress(f"seed {seed}: {finder}")
                with quiet_logging():
                    pairs, seconds = call()
                scored = score(pairs, planted, len(paths))
                found_among_originals.setdefault(finder, scored.pop("_among_originals"))
                records.append({"seed": seed, "finder": finder, "seconds": seconds, **scored})

    summary, rows = [], []
    for finder in dict.fromkeys(r["finder"] for r in records):
        members = [r for r in records if r["finder"] == finder]
        entry = {"finder": finder, "seeds": len(members), "found": summarize(m["found"] for m in members),
                 "found_by_edit": {edit: summarize(m["found_by_edit"][edit] for m in members) for edit in EDITS},
                 "pairs_among_originals": members[0]["pairs_among_originals"],
                 "wrong_partner": summarize(m["wrong_partner"] for m in members),
                 "seconds": summarize(m["seconds"] for m in members),
                 "first_pairs_among_originals": [
                     [relative(paths[i]), relative(paths[j])] for i, j in found_among_originals[finder][:12]]}
        summary.append(entry)
        row = {"finder": finder, "found": f"{100 * entry['found']['mean']:.0f}",
               "originals": str(entry["pairs_among_originals"]), "wrong": f"{entry['wrong_partner']['mean']:.1f}",
               "seconds": f"{entry['seconds']['mean']:.1f}"}
        row.update({edit: f"{100 * entry['found_by_edit'][edit]['mean']:.0f}" for edit in EDITS})
        rows.append(row)
    table = format_table(rows, [("finder", "finder"), ("found", "found %"),
                                *[(edit, edit) for edit in EDITS],
                                ("originals", "pairs in cub50"), ("wrong", "wrong partner"), ("seconds", "s")],
                         title=f"copies planted in cub50 ({len(paths)} images + {PER_EDIT * len(EDITS)} copies, "
                               f"{len(seeds)} seed(s)): share found with their original, by edit")
    notes = [f"reading the {len(paths)} images for their pixels took {read_s:.1f} s (fgdesk's seconds above are "
             "the search and match after it); pHash's seconds include hashing every image",
             "'pairs in cub50': pairs found among the dataset's own images (the same in every seed); the first are "
             "listed in the JSON to check by eye"]
    report.write({"images": len(paths), "copies": PER_EDIT * len(EDITS), "read_s": read_s, "summary": summary,
                  "records": records},
                 tables=[table], notes=notes, filename="duplicates_quick.json" if args.quick else None, print_json=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
