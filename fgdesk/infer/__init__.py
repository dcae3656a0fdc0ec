"""Using a trained run: predictions with heatmaps, overlays and model export.

Modules (import them by name; importing this package loads no torch):
- `predictor`: `Predictor.load(run_dir)`, `predict(images)` -> top-k classes, nearest
  labelled images and per-scale, fused and class-evidence maps; `predict_to_csv`.
- `overlay`: colormaps as lookup tables, `render_overlay`, `save_heatmaps` (no plotting libraries).
- `export`: `export_torchscript` and `export_onnx` (the latter needs `pip install fgdesk[onnx]`).
"""
