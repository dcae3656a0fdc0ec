"""Exported models give the same outputs as the eager model they came from."""
from __future__ import annotations

import builtins
import importlib.util

import pytest
import torch

from fgdesk.evaluate.embeddings import load_encoder
from fgdesk.evaluate.report import fit_classifier
from fgdesk.infer.export import ExportError, ExportedNet, export_onnx, export_torchscript, load_torchscript
from helpers_runs import NUM_CLASSES, make_demo_data, make_run, one_thread

_threads = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return make_run(root / "runs", make_demo_data(root / "data"), lively_attention=True)


def test_torchscript_round_trip_matches_eager(run_dir, tmp_path):
    path = export_torchscript(run_dir, tmp_path / "model.pt")
    module, metadata = load_torchscript(path)
    net, _, _ = load_encoder(run_dir, device="cpu")
    eager = ExportedNet(net, None, None).eval()
    images = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = eager(images), module(images)
    embedding, logits, fused, stages = actual
    assert embedding.shape == (2, net.embed_dim) and logits.shape == (2, 0)
    assert fused.shape == (2, 72, 88) and stages.shape == (2, 3, 72, 88)
    for want, got in zip(expected, actual):
        assert torch.allclose(want, got, atol=1e-5)
    assert metadata["stages"] == [2, 3, 4] and metadata["class_names"] == []


def test_torchscript_export_includes_a_fitted_classifier(run_dir, tmp_path):
    fit_classifier(run_dir, device="cpu")
    module, metadata = load_torchscript(export_torchscript(run_dir, tmp_path / "with_head.pt"))
    _, logits, _, _ = module(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, NUM_CLASSES) and len(metadata["class_names"]) == NUM_CLASSES
    assert metadata["preprocess"].endswith(f"the centre {metadata['eval_size']} x {metadata['eval_size']} square")


def test_onnx_export_without_the_onnx_extra_says_how_to_install_it(run_dir, monkeypatch):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ExportError, match=r"fgdesk\[onnx\]"):
        export_onnx(run_dir)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="the optional onnx package is not installed")
def test_onnx_export_writes_a_checked_model(run_dir, tmp_path):
    import onnx

    path = export_onnx(run_dir, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    assert [output.name for output in model.graph.output] == ["embedding", "logits", "fused_map", "stage_maps"]
