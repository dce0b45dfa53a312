"""`trading-jax backtest`: walk-forward comparisons with costs. On the GBM placebo every predictor comes out at
chance, and a predictor that reads the future is caught; folds never train on their test bars; interrupted runs
reuse their cached forecasts; mistakes in the file are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trading_jax.cli import EXIT_DATA_ERRORS, EXIT_OK, EXIT_USAGE, main
from trading_jax.runs import ConfigError, load_experiment, run_experiment
from trading_jax.runs import backtest as B

TINY = """
algorithm = "backtest"
name = "tiny_placebo"
seeds = [0, 1]
[walk_forward]
folds = 2
test = 50
train = 300
[[datasets]]
name = "gbm"
source = "gbm"
synthetic_bars = 420
synthetic_assets = 3
window = 10
horizon = 1
placebo = true
[[models]]
name = "tcn"
model = "tcn"
preset = "tiny"
epochs = 1
batch_size = 64
"""


@pytest.fixture(scope="module")
def placebo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backtest")
    path = folder / "tiny.toml"
    path.write_text(TINY)
    summary, ok = run_experiment(load_experiment(path), folder / "run", show_progress=False)
    return folder, path, summary, ok


def test_every_predictor_is_at_chance_on_the_placebo_random_walk(placebo):
    folder, _, summary, ok = placebo
    assert ok and "placebo at chance" in summary, summary
    report = json.loads((folder / "run" / "results.json").read_text())["datasets"]["gbm"]
    assert set(report["rows"]) == {"tcn", "ridge", "momentum", "buy_and_hold"}  # one model: no ensemble row
    assert set(report["at_chance"]) == {"tcn", "ridge", "momentum"} and all(report["at_chance"].values())
    for row in ("tcn", "ridge", "momentum"):
        band = report["chance_bands"][row]  # Newey-West, Bonferroni over the 3 rows x 2 checks: wider than binomial
        n = report["rows"][row]["n"]
        assert 1.96 * (0.25 / n) ** 0.5 < band["accuracy_half_width"] < 0.15
        assert abs(report["rows"][row]["direction_accuracy"]["mean"] - band["accuracy_null"]) <= band[
            "accuracy_half_width"]
    assert "ic" not in report["rows"]["buy_and_hold"]  # a constant forecast has no IC: n/a, not a number
    table = (folder / "run" / "results.md").read_text()
    assert "| buy_and_hold |" in table and "n/a" in table and "| tcn |" in table
    for png in ("equity.png", "drawdown.png", "rolling_sharpe.png", "importance_permutation.png",
                "importance_integrated_gradients.png"):
        assert (folder / "run" / "report" / "gbm" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_predictor_that_reads_the_future_fails_the_placebo(placebo, monkeypatch):
    folder, path, _, _ = placebo

    def peeking(close, lookback):  # "momentum" that is really the next bar's return: a leak
        logc = np.log(close)
        out = np.full_like(logc, np.nan)
        out[:-1] = logc[1:] - logc[:-1]
        return out

    monkeypatch.setattr(B, "momentum_signal", peeking)
    summary, ok = run_experiment(load_experiment(path), folder / "run", show_progress=False)  # resumes from the cache
    assert not ok and "LEAK? placebo rows off chance: gbm: momentum" in summary, summary
    assert "| momentum |" in (folder / "run" / "results.md").read_text()
    assert "**NO (FAILED: a leak?)**" in (folder / "run" / "results.md").read_text()


def test_walk_forward_folds_train_before_their_test_block_with_an_embargo():
    splits = B.fold_splits(1000, B.WalkForwardSpec(folds=3, test=0.1, val=0.2), horizon=5)
    assert [(s.test.start, s.test.stop) for s in splits] == [(700, 800), (800, 900), (900, 1000)]
    for s in splits:
        assert s.train.start == 0 and s.train.stop + 5 <= s.val.start and s.val.stop + 5 <= s.test.start
    rolling = B.fold_splits(1000, B.WalkForwardSpec(folds=3, test=0.1, val=0.2, train=400), horizon=5)
    assert [(s.train.start, s.val.stop, s.test.start) for s in rolling] == [(295, 695, 700), (395, 795, 800),
                                                                             (495, 895, 900)]
    assert len({(s.train.stop - s.train.start, s.val.stop - s.val.start) for s in rolling}) == 1  # one shape


def test_backtest_file_mistakes_are_one_line_errors(tmp_path, capsys):
    cases = {
        TINY.replace("folds = 2", "fold = 2"): r"\[walk_forward\] unknown key 'fold'",
        TINY.replace('name = "tcn"\n', 'name = "ridge"\n'): r"\[models\[0\]\] needs a unique name",
        TINY.replace("epochs = 1", 'epochs = 1\ntask = "classification"'): r"a backtest compares return forecasts",
        TINY.replace('source = "gbm"', 'source = "nowhere.csv"'): r"source = 'nowhere.csv': no such file",
        TINY.split("[[datasets]]")[0]: r"needs at least one \[\[datasets\]\] table",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_experiment(path)
    supervised = tmp_path / "supervised.toml"
    supervised.write_text('name = "s"\n[train]\nmodel = "tcn"\npreset = "tiny"\n')
    assert main(["backtest", str(supervised)]) in (EXIT_DATA_ERRORS, EXIT_USAGE)
    err = capsys.readouterr().err
    assert "`trading-jax backtest` runs algorithm = \"backtest\" files" in err and len(err.strip().splitlines()) == 1


def test_the_cli_reruns_from_the_cache_and_prints_the_summary(placebo, capsys):
    folder, path, _, _ = placebo
    assert main(["backtest", str(path), "--out", str(folder / "run"), "-q"]) == EXIT_OK
    assert "tiny_placebo: gbm: best model tcn Sharpe" in capsys.readouterr().out


def test_the_claims_section_compares_each_claim_with_the_best_model_and_baseline(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text(TINY.replace("placebo = true", "placebo = false") + "[claims]\nsharpe = 2.4\n")
    experiment = load_experiment(path)

    def row(mean, low, high):
        return {"mean": mean, "std": 0.1, "n": 3, "ci95_low": low, "ci95_high": high, "nonfinite": 0}

    results = {"gbm": {"placebo": False, "rows": {"tcn": {"sharpe": row(1.0, 0.2, 1.8)},
                                                  "big": {"sharpe": row(2.0, 1.0, 3.0)},
                                                  "buy_and_hold": {"sharpe": row(1.5, float("nan"), float("nan"))}}}}
    lines = B.claims_section(experiment, results)
    assert lines[6] == "| sharpe 2.4 | gbm | big: 2 [1, 3] | buy_and_hold: 1.5 | yes | +0.5 |", lines
    results["gbm"]["rows"]["big"]["sharpe"] = row(2.0, 1.0, 2.3)
    assert B.claims_section(experiment, results)[6].endswith("| no | +0.5 |")
    bad = tmp_path / "bad_claims.toml"
    bad.write_text(TINY + "[claims]\nsharp = 2.4\n")
    with pytest.raises(ConfigError, match=r"\[claims\] unknown key 'sharp'"):
        load_experiment(bad)


def test_a_rerun_on_changed_data_files_is_refused_naming_the_file(tmp_path, monkeypatch):
    csv = tmp_path / "AAA.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"2020-01-{d:02d},1,1,1,1,10\n" for d in range(1, 29)))
    path = tmp_path / "files.toml"
    path.write_text(TINY.replace('source = "gbm"', f'source = "{csv}"').replace("placebo = true", ""))
    calls = []

    def fake_dataset(experiment, spec, *args):  # the folder logic only: no training
        calls.append(spec.name)
        return {"source": str(csv), "symbols": 1, "period": spec.period, "placebo": False, "bars": 28,
                "folds": [], "test_samples": 0, "ridge_alphas": [], "rows": {}, "at_chance": {}, "chance_bands": {},
                "sharpe_sampling_half_width": 1.0, "test_bars": 0, "report": None}

    monkeypatch.setattr(B, "_run_dataset", fake_dataset)
    experiment = load_experiment(path)
    run_experiment(experiment, tmp_path / "run", show_progress=False)
    run_experiment(experiment, tmp_path / "run", show_progress=False)  # the same files: it resumes
    assert calls == ["gbm", "gbm"]
    csv.write_text(csv.read_text().replace(",1,10\n", ",2,10\n", 1))
    with pytest.raises(ConfigError, match=r"data file .*AAA.csv changed"):
        run_experiment(experiment, tmp_path / "run", show_progress=False)


def test_a_model_with_non_finite_forecasts_is_a_failed_row_not_a_partial_score(tmp_path, monkeypatch):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    cached, sizes = B._cache, {}

    def diverged(folder, key, compute):
        if "_tcn_" in key:  # the model diverged: NaN forecasts for the fold's test samples (no training here)
            return {"forecast": np.full((2, sizes[key.split("_tcn_")[0]]), np.nan, np.float32)}
        out = cached(folder, key, compute)
        if key.endswith("_ridge"):  # computed first in each fold: it gives the fold's sample count
            sizes[key[:-len("_ridge")]] = len(out["forecast"])
        return out

    monkeypatch.setattr(B, "_cache", diverged)
    summary, ok = run_experiment(load_experiment(path), tmp_path / "run", show_progress=False)
    assert not ok and "FAILED rows (non-finite forecasts or scores): gbm: tcn" in summary, summary
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| tcn | FAILED" in table
    report = json.loads((tmp_path / "run" / "results.json").read_text())["datasets"]["gbm"]
    assert "tcn" not in report["at_chance"] and all(report["at_chance"].values())
