"""A tiny MAML experiment run (`algorithm = "maml"`): every k of every initialisation in the table, every
meta-step of both seeds run (one vmapped population)."""

from __future__ import annotations

import json

import numpy as np

from run_files import MAML, write  # noqa: E402
from trading_jax.runs import load_experiment, run_experiment


def test_a_tiny_maml_run_compares_maml_with_pretraining_scratch_and_zero_for_every_k(tmp_path):
    experiment = load_experiment(write(tmp_path, MAML))
    summary, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok, summary
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = set(report["summary"])
    for k in (5, 20):
        assert {f"maml/{k}", f"pretrain/{k}", f"scratch/{k}"} <= rows
    assert {"maml/0", "pretrain/0", "zero_forecast/0"} <= rows
    for row, metrics in report["summary"].items():
        assert np.isfinite(metrics["mse"]["mean"]) and metrics["mse"]["n"] == 2, row
    assert "maml-pretrain" in (tmp_path / "run" / "results.md").read_text()
    # meta-training ran every step of both seeds (one vmapped population) and none was skipped
    for seed in report["seeds"]:
        assert len(seed["meta_history"]["meta_loss"]) == 4 and not any(seed["meta_history"]["skipped"])
    # a rerun resumes (the folder holds the same config) and gives the same table
    again, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok and again == summary
