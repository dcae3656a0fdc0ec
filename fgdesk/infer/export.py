"""Export a run's encoder (plus its linear classifier, when fitted) to TorchScript or ONNX.

The exported module takes a normalised (B, 3, H, W) batch (ImageNet mean/std, see
`fgdesk.data.augment`) and returns a tuple:
    embedding (B, D), logits (B, C) or (B, 0) without a classifier,
    fused attention map (B, H, W), per-stage attention maps (B, S, H, W),
the maps upsampled to the input size exactly as `fuse_maps` does in fgdesk.
TorchScript files carry a `fgdesk.json` extra file with the class names, stages,
eval size and normalisation.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from fgdesk.data.augment import EVAL_RESIZE_RATIO, IMAGE_MEAN, IMAGE_STD
from fgdesk.evaluate.embeddings import load_encoder
from fgdesk.model.network import FineGrainedNet, fuse_maps
from fgdesk.train import runs
from fgdesk.train.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("embedding", "logits", "fused_map", "stage_maps")
TOLERANCE = 1e-4
ONNX_OPSET = 18


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript is deprecated in recent torch and tracing warns about shape reads that
    are dynamic here (checked below at a second input size); neither helps the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


class ExportError(RuntimeError):
    """An export failed or cannot run here; the message says why and what to install or change."""


class ExportedNet(nn.Module):
    """FineGrainedNet + optional linear head, returning plain tensors (traceable, exportable)."""

    def __init__(self, net: FineGrainedNet, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.net = net
        dim = net.embed_dim
        self.register_buffer("weight", weight.float() if weight is not None else torch.zeros(0, dim))
        self.register_buffer("bias", bias.float() if bias is not None else torch.zeros(0))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.net(images)
        embedding = output.embedding.float()
        logits = embedding @ self.weight.t() + self.bias
        upsampled, fused = fuse_maps(output.attention_maps, images.shape[-2:], self.net.attention.scale_weights())
        return embedding, logits, fused, torch.stack(upsampled, dim=1)


def _classifier(run_dir: Path, embed_dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    path = run_dir / runs.CLASSIFIER_FILE
    if not path.is_file():
        return None, None, []
    try:
        document = load_checkpoint(path, kind="classifier")
    except CheckpointError as exc:
        log.warning("exporting without the classifier: %s", exc)
        return None, None, []
    weight, bias = document.get("weight"), document.get("bias")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] != embed_dim or not isinstance(bias, torch.Tensor):
        log.warning("exporting without the classifier: %s does not fit this encoder", path)
        return None, None, []
    return weight, bias, [str(n) for n in document.get("class_names", [])]


def _prepare(run_dir: str | os.PathLike[str]) -> tuple[ExportedNet, dict, int]:
    run_dir = Path(run_dir)
    net, config, checkpoint_path = load_encoder(run_dir, device="cpu")
    weight, bias, names = _classifier(run_dir, net.embed_dim)
    module = ExportedNet(net, weight, bias).eval()
    metadata = {
        "format": "fgdesk-export",
        "version": 1,
        "source_checkpoint": checkpoint_path.name,
        "backbone": config.model.backbone,
        "stages": list(net.stages),
        "embed_dim": net.embed_dim,
        "class_names": names,
        "eval_size": config.data.eval_size,
        "input": "float32 (B, 3, H, W), RGB scaled to [0, 1], then (x - mean) / std",
        # What the classifier was fitted and scored on; other framings score lower (docs/benchmarks.md §2).
        "preprocess": (f"shorter side resized to {int(config.data.eval_size * EVAL_RESIZE_RATIO)} px (bilinear, "
                       f"antialiased), then the centre {config.data.eval_size} x {config.data.eval_size} square"),
        "mean": list(IMAGE_MEAN),
        "std": list(IMAGE_STD),
        "outputs": list(OUTPUT_NAMES),
    }
    return module, metadata, config.data.eval_size


def _compare(expected: tuple[torch.Tensor, ...], actual: tuple[torch.Tensor, ...], what: str) -> None:
    for name, want, got in zip(OUTPUT_NAMES, expected, actual):
        got = torch.as_tensor(got)
        if tuple(want.shape) != tuple(got.shape):
            raise ExportError(f"{what}: output {name} has shape {tuple(got.shape)}, eager gives {tuple(want.shape)}")
        if want.numel() and not torch.allclose(want, got.to(want.dtype), atol=TOLERANCE, rtol=TOLERANCE):
            difference = float((want - got).abs().max())
            raise ExportError(f"{what}: output {name} differs from eager by up to {difference:.2e}")


def export_torchscript(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None) -> Path:
    """Trace the run's model to TorchScript, check it against eager on random inputs, save it."""
    run_dir = Path(run_dir)
    out = Path(out_path) if out_path else run_dir / runs.EXPORT_DIR / runs.EXPORT_FILES[0]
    module, metadata, size = _prepare(run_dir)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, size, size, generator=generator)
    with torch.no_grad(), _quiet_jit():
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
        except Exception as exc:
            raise ExportError(f"TorchScript tracing failed ({type(exc).__name__}: {exc})") from exc
        # A second, non-square size checks that the trace did not freeze the input shape.
        other = torch.randn(1, 3, size + 16, size, generator=generator)
        for sample in (example, other):
            _compare(module(sample), traced(sample), f"TorchScript export at input {tuple(sample.shape)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        with _quiet_jit():
            torch.jit.save(traced, str(temporary), _extra_files={"fgdesk.json": json.dumps(metadata)})
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("exported TorchScript model to %s", out)
    return out


def load_torchscript(path: str | os.PathLike[str]) -> tuple[torch.jit.ScriptModule, dict]:
    """(module, metadata) of a file written by `export_torchscript`."""
    extra = {"fgdesk.json": ""}
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["fgdesk.json"] or "{}")


def export_onnx(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None) -> Path:
    """Export to ONNX with dynamic batch and image size; needs the optional `onnx` extra."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the optional onnx packages ({exc.name or 'onnx'} is not installed): "
            "pip install 'fgdesk[onnx]' (TorchScript export works without them)"
        ) from exc
    run_dir = Path(run_dir)
    out = Path(out_path) if out_path else run_dir / runs.EXPORT_DIR / runs.EXPORT_FILES[1]
    module, metadata, size = _prepare(run_dir)
    # Batch 2: an example batch of 1 would fix the batch dimension at 1 (0/1 specialisation).
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        try:
            dynamic = torch.export.Dim.AUTO  # batch, height and width stay symbolic
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=ONNX_OPSET,
                input_names=["images"], output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"images": {0: dynamic, 2: dynamic, 3: dynamic}},
            )
            program.save(str(temporary))
        except Exception as exc:
            raise ExportError(
                f"the ONNX exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                "Check that the onnx and onnxscript versions match this torch (pip install -U 'fgdesk[onnx]'); "
                "TorchScript export is the fallback."
            ) from exc
        model = onnx.load(str(temporary))
        for key, value in (("fgdesk", json.dumps(metadata)),):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(temporary))
        _check_onnx_runtime(module, temporary, example)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("exported ONNX model to %s", out)
    return out


def _check_onnx_runtime(module: nn.Module, path: Path, example: torch.Tensor) -> None:
    """Compare with eager when onnxruntime is installed (it is optional, so skip quietly otherwise)."""
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime not installed; the ONNX file was checked structurally only")
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        _compare(module(example), tuple(torch.from_numpy(o) for o in outputs), "ONNX export")
