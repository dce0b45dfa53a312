"""The experiment layer: every file loads, nonsense is refused with one-line errors, run folders cannot
silently lie (changed config or data, a concurrent run, a failure before the first checkpoint), failed
runs say FAILED and exit non-zero, and a seeds-vmapped experiment equals its per-seed runs."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trading_jax.evaluation.stats import summarize
from trading_jax.runs import ConfigError, load_experiment, run_experiment
from trading_jax.runs.folder import RunFolder, file_fingerprints

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))

TINY = """
name = "tiny"
seeds = [0, 1]
[data]
synthetic_bars = 700
synthetic_assets = 2
window = 16
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = 2
batch_size = 64
"""


def write(tmp_path, text, name="tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_file_loads_and_repeats_over_several_seeds(path, monkeypatch, tmp_path):
    monkeypatch.chdir(path.parents[1])  # data paths are relative to the repository root
    if "shared/data" in path.read_text() and not (path.parents[2] / "shared" / "data").exists():
        pytest.skip("needs ../shared/data")
    if "[pretrained]" in path.read_text():  # a checkpoint the user downloads: check the file with a FinBERT-format one
        fixture = Path(__file__).parent / "fixtures" / "tiny_bert"
        copy = tmp_path / path.name
        copy.write_text(re.sub(r'(?m)^path = ".*"$', f'path = "{fixture}"', path.read_text()))
        path = copy
    experiment = load_experiment(path)
    assert len(experiment.seeds) >= 3, "results are reported over several seeds"
    if experiment.algorithm == "ppo":
        assert experiment.episodes >= 1000


@pytest.mark.parametrize("change, message", [
    (("[data]\n", "[data]\nwindoww = 3\n"), "[data] unknown key 'windoww' (did you mean 'window'?)"),
    (("epochs = 2", 'epochs = "3"'), "[train] epochs = '3': expected an integer"),
    (("batch_size = 64", "batch_size = 64\nlearning_rate = nan"),
     "[train] learning_rate = nan: expected a finite number > 0"),
    (("batch_size = 64", "batch_size = 64\nlearning_rate = -0.1"),
     "[train] learning_rate = -0.1: expected a finite number > 0"),
    (('model = "tcn"', 'model = "tnc"'), "[train] unknown key 'tnc' (did you mean 'tcn'?)"),
    (('preset = "tiny"', 'preset = "huge"'), "[train] preset = 'huge': model 'tcn' has presets"),
    (("batch_size = 64", "batch_size = 64\nlabel_smoothing = 1.0"),
     "[train] label_smoothing = 1.0: expected a number in [0, 1)"),
    (("horizon = 3", "horizon = 3\ntrain = 0.9\nval = 0.2"), "[data] train + val + test = 1.25: expected at most 1"),
    (('seeds = [0, 1]', 'seeds = [0, 0]'), "seeds = [0, 0]: expected one or more distinct seeds"),
    (("[train]", "[checkpoint]\nkeep_bset = 2\n[train]"), "[checkpoint] unknown key 'keep_bset'"),
    (("batch_size = 64", "batch_size = 64\n[train.model_kwargs]\ndropout = 1.5"),
     "[train.model_kwargs] dropout = 1.5: expected a number in [0, 1)"),
    (("batch_size = 64", "batch_size = 64\n[train.model_kwargs]\nchanels = 8"),
     "[train.model_kwargs] unknown key 'chanels' (did you mean 'channels'?)"),
    (("batch_size = 64", "batch_size = 64\n[train.model_kwargs]\nchannels = 8.5"),
     "[train.model_kwargs] channels = 8.5: expected an integer"),
    (('synthetic_assets = 2', 'synthetic_assets = 2\nsource = "nowhere.csv"'),
     "[data] source = 'nowhere.csv': no such file or folder"),
])
def test_nonsense_in_an_experiment_file_is_refused_with_one_line_naming_file_table_and_key(tmp_path, change, message):
    path = write(tmp_path, TINY.replace(*change, 1))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_the_cli_prints_config_errors_as_one_line_and_exits_1(tmp_path, capsys):
    from trading_jax.cli import main

    path = write(tmp_path, TINY.replace("batch_size = 64", "batch_size = 64\nlearning_rate = nan"))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"trading-jax: error: {path}: [train] learning_rate = nan: expected a finite number > 0"
    assert main(["train", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml: no such experiment file" in capsys.readouterr().err
    assert not (tmp_path / "out" / "config.json").exists()


def test_a_classifier_whose_class_count_differs_from_the_labels_is_refused(tmp_path):
    path = write(tmp_path, TINY.replace('task = "regression"', 'task = "classification"')
                 + "[train.model_kwargs]\nn_classes = 2\n")
    with pytest.raises(ConfigError, match=r"\[train.model_kwargs\] n_classes = 2 does not match the labels: "
                                          r"direction labels have 3 classes \(down, flat, up\); set n_classes = 3"):
        run_experiment(load_experiment(path), tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "config.json").exists(), "a refused run does not claim the folder"
    path = write(tmp_path, TINY.replace('task = "regression"', 'task = "classification"'))  # no n_classes at all
    with pytest.raises(ConfigError, match=r"\[train\] task = 'classification': model 'tcn' has no 'logits' output as "
                                          r"configured \(it gives prediction, sequence\); set n_classes = 3"):
        run_experiment(load_experiment(path), tmp_path / "out", show_progress=False)


# ------------------------------------------------------------------------------------- run folders


def test_a_changed_config_is_refused_and_overwrite_starts_fresh(tmp_path):
    with RunFolder(tmp_path / "run") as folder:
        assert folder.claim({"train": {"lr": 0.1}}, {}) == "new"
    with RunFolder(tmp_path / "run") as folder:
        assert folder.claim({"train": {"lr": 0.1}}, {}) == "resume"
    with pytest.raises(ConfigError) as error, RunFolder(tmp_path / "run") as folder:
        folder.claim({"train": {"lr": 0.2}}, {})
    assert str(error.value) == (f"{tmp_path / 'run'} holds a run of a different config (train.lr: 0.1 -> 0.2): rerun "
                                "with --overwrite to start fresh, or choose another --out")
    (tmp_path / "run" / "checkpoints" / "seed_0" / "3").mkdir(parents=True)
    with RunFolder(tmp_path / "run", overwrite=True) as folder:
        assert folder.claim({"train": {"lr": 0.2}}, {}) == "new"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_changed_data_is_refused_naming_the_file(tmp_path):
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n")
    with RunFolder(tmp_path / "run") as folder:
        folder.claim({"a": 1}, {"files": file_fingerprints([csv]), "split": [0, 1]})
    csv.write_text("timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.6,10\n")
    with pytest.raises(ConfigError) as error, RunFolder(tmp_path / "run") as folder:
        folder.claim({"a": 1}, {"files": file_fingerprints([csv]), "split": [0, 1]})
    assert str(error.value).startswith(f"{tmp_path / 'run'} was trained on different data (data file "
                                       f"{csv.resolve()} changed (size 63 -> 63 bytes, content hash differs))")
    assert "--overwrite" in str(error.value)


def test_a_concurrent_run_is_refused_and_a_dead_runs_lock_is_cleared(tmp_path):
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        lock = tmp_path / "run" / ".lock"
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(ConfigError, match=rf"another run \(pid {sleeper.pid} on .*\) is using this folder"):
            with RunFolder(tmp_path / "run"):
                pass
        assert lock.exists(), "a live run's lock is left alone"
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunFolder(tmp_path / "run") as folder:  # its process is gone: the lock is cleared
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        folder.claim({"a": 1}, {})
    assert not lock.exists(), "the lock is released at the end"


def test_a_run_that_fails_before_its_first_checkpoint_does_not_claim_the_folder(tmp_path):
    with pytest.raises(RuntimeError), RunFolder(tmp_path / "run") as folder:
        folder.claim({"lr": 0.1}, {})
        raise RuntimeError("crashed while compiling")
    assert not (tmp_path / "run" / "config.json").exists()
    with RunFolder(tmp_path / "run") as folder:  # a corrected rerun is not refused
        assert folder.claim({"lr": 0.2}, {}) == "new"


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot write the run folder .*choose another --out"):
        with RunFolder(blocker / "run"):
            pass


# --------------------------------------------------------------------------------- end to end


def test_a_seeds_vmapped_experiment_equals_its_per_seed_runs_and_writes_its_artefacts(tmp_path):
    path = write(tmp_path, TINY)
    summary, ok = run_experiment(load_experiment(path), tmp_path / "vmapped", show_progress=False)
    assert ok and "tiny: tcn on synthetic market" in summary
    path = write(tmp_path, TINY.replace('seeds = [0, 1]', 'seeds = [0, 1]\nvmap_seeds = false'), "loop.toml")
    _, ok = run_experiment(load_experiment(path), tmp_path / "loop", show_progress=False)
    assert ok
    vmapped = json.loads((tmp_path / "vmapped" / "results.json").read_text())
    looped = json.loads((tmp_path / "loop" / "results.json").read_text())
    for a, b in zip(vmapped["seeds"], looped["seeds"]):
        np.testing.assert_allclose(a["history"]["val_loss"], b["history"]["val_loss"], rtol=1e-5)
        for metric, value in a["test"]["model"].items():
            np.testing.assert_allclose(value, b["test"]["model"][metric], rtol=1e-4, atol=1e-6)
    assert vmapped["summary"]["model"]["rmse"]["n"] == 2 and vmapped["status"] == "ok"
    train_stop, test_start = vmapped["info"]["split"]["train"][1], vmapped["info"]["split"]["test"][0]
    assert test_start > train_stop, "the test split comes after the training data"
    assert any((tmp_path / "vmapped" / "checkpoints" / "population").iterdir())
    assert list((tmp_path / "loop" / "tensorboard" / "seed_1").glob("events.out.tfevents.*"))
    assert (tmp_path / "vmapped" / "results.md").read_text().startswith("# tiny")


def test_an_all_nan_run_exits_non_zero_and_its_table_says_failed(tmp_path, capsys):
    from trading_jax.cli import main

    path = write(tmp_path, TINY.replace("batch_size = 64", "batch_size = 64\nlearning_rate = 1e30\n"
                                        "max_grad_norm = 1e30").replace("seeds = [0, 1]", "seeds = [0]"))
    assert main(["train", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "tiny: FAILED: seed 0: the validation loss was NaN or inf in every epoch" in out
    table = (tmp_path / "out" / "results.md").read_text()
    assert "**FAILED**: seed 0: the validation loss was NaN or inf in every epoch" in table
    assert "| model | FAILED |" in table
    assert json.loads((tmp_path / "out" / "results.json").read_text())["status"] == "FAILED"


def test_summarize_gives_a_hand_worked_student_t_interval_and_never_averages_a_nan():
    out = summarize([1.0, 2.0, 3.0])
    # mean 2, s = 1, t_{0.975, 2} = 4.302653, half-width = 4.302653 / sqrt(3)
    assert out["mean"] == 2.0 and out["std"] == 1.0 and out["nonfinite"] == 0
    np.testing.assert_allclose([out["ci95_low"], out["ci95_high"]], [2 - 2.484138, 2 + 2.484138], rtol=1e-6)
    bad = summarize([1.0, float("nan"), 3.0])
    assert np.isnan(bad["mean"]) and bad["nonfinite"] == 1


def test_a_run_fails_when_every_step_was_skipped_or_every_validation_loss_is_nan_and_not_otherwise():
    from trading_jax.runs.supervised import failed_reason

    ok = {"val_loss": [1.0, 0.9, 0.95], "skipped_steps": [0, 3, 0], "stopped": [False, False, True], "pool": [256] * 3}
    assert failed_reason(ok, batch_size=64) is None
    skipped = dict(ok, skipped_steps=[4, 4, 0])  # 2 epochs ran, 4 steps each, all skipped; the stopped one ignored
    assert failed_reason(skipped, 64) == "every training step was skipped (8 non-finite losses or gradients)"
    nan = dict(ok, val_loss=[float("nan"), float("inf"), 0.5])  # the finite value is from a stopped epoch
    assert failed_reason(nan, 64) == "the validation loss was NaN or inf in every epoch"
