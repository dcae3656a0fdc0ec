"""Builds tiny run folders without the training engine, for evaluation and inference tests."""
from __future__ import annotations

from pathlib import Path

import torch

from fgdesk.config import RunConfig
from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.model.moco import MoCo
from fgdesk.train import runs
from fgdesk.train.checkpoint import save_checkpoint

NUM_CLASSES = 6
PER_CLASS = 8  # 6 train + 2 test images per class
IMAGE_SIZE = 64


def make_demo_data(root: Path) -> Path:
    return make_demo_dataset(root, num_classes=NUM_CLASSES, per_class=PER_CLASS, size=IMAGE_SIZE, seed=0)


def make_run(root: Path, data: Path, attention: str = "multiscale", lively_attention: bool = False, seed: int = 0) -> Path:
    """An untrained run whose last.pt holds a freshly initialised MoCo model.

    A fresh attention gate ends in a zero conv, so its maps are exactly uniform;
    `lively_attention` gives the gates random last layers so the maps vary.
    """
    torch.manual_seed(seed)
    config = RunConfig()
    config.data.path = str(data)
    config.data.image_size = IMAGE_SIZE
    config.data.eval_size = IMAGE_SIZE
    config.data.local_size = 32
    config.data.num_workers = 0
    config.model.backbone = "resnet18"
    config.model.attention = attention
    config.validate()
    run_dir = runs.new_run_dir(name=attention, root=root)
    config.save(run_dir / runs.CONFIG_FILE)
    moco = MoCo(config, queue_size=64)
    if lively_attention and attention == "multiscale":
        with torch.no_grad():
            for pool in moco.query.net.attention.pools:
                pool.gate[-1].weight.normal_(0.0, 1.0)
    save_checkpoint(runs.last_checkpoint(run_dir), {"model": moco.state_dict(), "epoch": 0, "global_step": 0}, config)
    runs.write_state(run_dir, status="finished")
    return run_dir


def make_colour_data(root: Path, per_class: int = 8, test_per_class: int = 3) -> Path:
    """Red and blue noisy images in train/ and test/ class folders: colour is all that tells the
    classes apart, so even a network at random initialisation separates them."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name, colour in (("blue", (20, 40, 220)), ("red", (220, 30, 20))):
            for i in range(count):
                noise = torch.randint(-25, 26, (48, 48, 3), generator=generator)
                pixels = (torch.tensor(colour).view(1, 1, 3) + noise).clamp(0, 255).to(torch.uint8).numpy()
                path = root / split / name / f"{name}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


def one_thread():
    """Generator for a fixture: torch on one thread (tiny tensors; shared CPUs), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
