"""Sentiment experiments end to end: text data, label schemes, training on token ids, baselines, the analyzer."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.data import text as T
from trading_jax.runs import ConfigError, load_experiment, run_experiment

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_bert"
SHARED_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sentiment" / \
    "twitter_financial_news_train.csv"

WORDS = {0: ["plunges", "misses", "downgraded", "slumps", "cuts"],      # bearish
         1: ["surges", "beats", "upgraded", "rallies", "raises"],       # bullish
         2: ["announces", "schedules", "reports", "files", "hosts"]}    # neutral
TICKERS = ["AAPL", "MSFT", "TSLA", "AMZN", "NVDA", "JPM", "XOM", "KO", "PFE", "GE", "F", "T"]
FILLER = ["today", "after earnings", "in early trade", "on guidance", "this quarter", "amid volume", "again",
          "says analyst", "per filing", "ahead of the call"]


def keyword_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A CSV of labelled headlines whose verb gives the class (0 bearish, 1 bullish, 2 neutral), with links."""
    rng = np.random.default_rng(seed)
    rows = ["text,label"]
    for i in range(n):
        label = int(rng.choice(3, p=[0.25, 0.25, 0.5]))
        text = (f"${rng.choice(TICKERS)} {rng.choice(TICKERS).lower()} {rng.choice(WORDS[label])} "
                f"{rng.choice(FILLER)} {i} https://t.co/{rng.integers(1e9):x}")
        rows.append(f"\"{text}\",{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def write_experiment(path: Path, csv: Path, extra: str = "", train: str | None = None, name: str = "s") -> Path:
    train = train or ('model = "sentiment_bert"\npreset = "tiny"\nepochs = 8\nbatch_size = 16\n'
                      "learning_rate = 0.003\nwarmup_steps = 5\n")
    extra = extra + "\n[checkpoint]\nevery_epochs = 100\n"  # one chunk: one compilation of the epochs
    path.write_text(f'algorithm = "sentiment"\nname = "{name}"\nseeds = [0, 1]\n\n[data]\nsource = "{csv}"\n'
                    f'max_length = 32\n\n[tokenizer]\nvocab_size = 200\nmin_frequency = 1\n\n[train]\n{train}\n{extra}')
    return path


# ------------------------------------------------------------------------------------------ data


def test_label_schemes_move_labels_by_meaning_not_by_id():
    twitter = np.array([0, 1, 2])  # bearish, bullish, neutral
    assert T.remap_labels(twitter, "twitter_financial_news", "finbert").tolist() == [1, 0, 2]  # negative, positive
    assert T.remap_labels(twitter, "twitter_financial_news", "direction").tolist() == [0, 2, 1]  # down, up, flat
    assert T.remap_labels(T.remap_labels(twitter, "twitter_financial_news", "finbert"), "finbert",
                          "twitter_financial_news").tolist() == twitter.tolist()
    with pytest.raises(ValueError, match="label 3 at row 1"):
        T.remap_labels([0, 3], "finbert", "direction")


def test_a_checkpoint_whose_classes_are_in_another_order_is_refused():
    finbert = {0: "positive", 1: "negative", 2: "neutral"}
    T.check_id2label(finbert, "finbert", "ckpt")
    T.check_id2label({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "twitter_financial_news", "ckpt")  # says nothing
    with pytest.raises(ValueError, match="ckpt: the checkpoint's classes are 0 positive, 1 negative, 2 neutral "
                                         r"\(that is the 'finbert' scheme\)"):
        T.check_id2label(finbert, "twitter_financial_news", "ckpt")


def test_bad_csv_rows_are_one_line_errors_naming_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\n"fine",0\n"",1\n')
    with pytest.raises(ValueError, match=r"bad.csv: column 'text' is empty at line 3"):
        T.load_text_csv(bad)
    bad.write_text('text,label\n"fine",0\n"also fine",7\n')
    with pytest.raises(ValueError, match=r"column 'label' has 7 at line 3: expected a 'twitter_financial_news' class"):
        T.load_text_csv(bad)
    bad.write_text('text,label\n"fine",0\n"no label",\n')
    with pytest.raises(ValueError, match="column 'label' has an empty value at line 3"):
        T.load_text_csv(bad)
    with pytest.raises(ValueError, match="no column 'headline'; columns: text, label"):
        T.load_text_csv(bad, text_column="headline")
    bad.write_text('text,label\n"a",Bullish\n"b",neutral\n')  # class names are read as the scheme's ids
    assert T.load_text_csv(bad).labels.tolist() == [1, 2]
    bad.write_text('text,label\n"a",positive\n"b",neutral\n')  # a finbert name is not a twitter class
    with pytest.raises(ValueError, match="has 'positive' at line 2"):
        T.load_text_csv(bad)


def test_macro_f1_matches_scikit_learn_and_the_bootstrap_brackets_the_score():
    from sklearn.metrics import f1_score

    from trading_jax.runs.sentiment import _scores, bootstrap_interval

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        pred, labels = rng.integers(0, 3, n), rng.integers(0, 3, n)
        pred[: n // 2] = 2  # classes missing from one side
        expected = f1_score(labels, pred, average="macro", labels=[0, 1, 2], zero_division=0)
        assert _scores(pred, labels)["macro_f1"] == pytest.approx(expected, abs=1e-12)
    pred, labels = rng.integers(0, 3, 400), rng.integers(0, 3, 400)
    low, high = bootstrap_interval(pred, labels)["accuracy"]
    assert low < _scores(pred, labels)["accuracy"] < high and high - low < 0.12


def test_near_duplicate_texts_never_straddle_the_split(tmp_path):
    csv = tmp_path / "d.csv"
    rows = ["text,label"] + [f"\"Stock {i % 40} rallies https://t.co/{i}\",1" for i in range(200)]
    csv.write_text("\n".join(rows) + "\n")
    data = T.load_text_csv(csv)
    assert len(np.unique(data.groups)) == 40  # the same headline with another link is one group
    parts = T.split_groups(data.groups, 0.6, 0.2, 0.2, seed=3)
    sides = [set(data.groups[p]) for p in parts]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sum(len(p) for p in parts) == 200


def test_tokenizer_round_trip_on_a_vocabulary_built_here(tmp_path):
    texts = ["Apple beats earnings estimates", "Shares of Tesla plunge after recall", "Fed holds rates steady"] * 5
    vocab = T.train_wordpiece_vocab(texts, vocab_size=120, out_dir=tmp_path / "tok", min_frequency=1)
    lines = vocab.read_text().splitlines()
    assert lines[:5] == list(T.SPECIAL_TOKENS)
    tokenizer = T.load_tokenizer(tmp_path / "tok")
    assert len(tokenizer) == len(lines)  # not the 5-token vocabulary of transformers 5's vocab_file= pitfall
    encoded, truncated = T.encode_texts(tokenizer, texts[:3], max_length=32)
    assert truncated == 0 and encoded["input_ids"].shape == (3, 16)  # padded to the 16-token bucket
    assert (encoded["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    for ids, mask, original in zip(encoded["input_ids"], encoded["attention_mask"], texts):
        assert tokenizer.unk_token_id not in ids[mask == 1].tolist()
        assert tokenizer.decode(ids[mask == 1], skip_special_tokens=True) == original.lower()
    again = T.train_wordpiece_vocab(texts[::-1] * 2, vocab_size=120, out_dir=tmp_path / "tok2", min_frequency=1)
    assert again.read_bytes() == vocab.read_bytes()  # order and repetition change no ranking: the same file
    short, truncated = T.encode_texts(tokenizer, texts[:3], max_length=5)
    assert truncated == 3 and short["input_ids"].shape == (3, 5)
    assert (short["input_ids"][:, -1] == tokenizer.sep_token_id).all()


# ------------------------------------------------------------------------------------- experiment files


@pytest.mark.parametrize("extra, train, message", [
    ("", 'model = "tcn"\n', r"\[train\] model = 'tcn': a sentiment experiment trains one of sentiment_bert"),
    ("", 'model = "sentiment_bert"\npreset = "tiny"\ntask = "regression"\n', "task = 'regression'"),
    ("", 'model = "sentiment_bert"\npreset = "tiny"\nmixup_alpha = 0.2\n', "token ids: leave them out"),
    (f'[pretrained]\npath = "{FIXTURE}"\n', 'model = "bert_classifier"\n',
     r"\[tokenizer\] is for a model trained from scratch"),
    ("", 'model = "sentiment_bert"\npreset = "tiny"\n[train.model_kwargs]\nhiden_size = 8\n',
     "did you mean 'hidden_size'"),
])
def test_experiment_mistakes_are_one_line_config_errors(tmp_path, extra, train, message):
    path = write_experiment(tmp_path / "x.toml", keyword_csv(tmp_path / "k.csv", 40), extra=extra, train=train)
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


# ------------------------------------------------------------------------------------------------ runs


def test_a_small_bert_learns_keyword_sentiment_and_reports_baselines(tmp_path):
    csv = keyword_csv(tmp_path / "k.csv")
    experiment = load_experiment(write_experiment(tmp_path / "x.toml", csv))
    summary, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok, summary
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert report["leak_check"]["train_test_shared_groups"] == 0
    model, majority = report["test"]["model"], report["test"]["majority_class"]
    assert model["accuracy"]["n"] == 2 and np.isfinite(model["accuracy"]["ci95_low"])
    assert model["accuracy"]["mean"] > majority["accuracy"]["mean"] + 0.25  # the verbs carry the class
    assert report["test"]["tfidf_logistic"]["accuracy"]["mean"] > 0.8
    assert "| tfidf_logistic |" in (tmp_path / "run" / "results.md").read_text()
    assert (tmp_path / "run" / "tokenizer" / "vocab.txt").is_file()

    from trading_jax.runs.sentiment import load_analyzer

    analyzer = load_analyzer(tmp_path / "run", seed=1)
    texts = ["$AAPL aapl surges today https://t.co/x", "$KO ko plunges again", "$GE ge schedules per filing"]
    out = analyzer.analyze(texts)
    assert out["probs"].shape == (3, 3) and np.allclose(out["probs"].sum(-1), 1, atol=1e-5)
    assert list(out["label"]) == ["bullish", "bearish", "neutral"]
    assert out["score"][0] > 0 > out["score"][1]
    assert ((out["confidence"] > 0) & (out["confidence"] < 1)).all()
    assert "price_impact" not in out  # untrained without price targets: not reported
    alone = analyzer.analyze(texts[:1])  # another batch bucket, and padding rows dropped
    np.testing.assert_allclose(alone["probs"][0], out["probs"][0], atol=1e-5)
    compiled = set(analyzer.compiled)
    analyzer.analyze(texts[::-1])
    assert analyzer.compiled == compiled  # the same buckets: no new program
    with pytest.raises(ValueError, match="a list of texts, not one string"):
        analyzer.analyze("one string")
    bf16 = load_analyzer(tmp_path / "run", seed=1, dtype="bfloat16").analyze(texts)
    np.testing.assert_allclose(bf16["probs"], out["probs"], atol=0.05)

    from trading_jax.cli import main

    assert main(["analyze", str(tmp_path / "run"), "--seed", "1", *texts, "--out", str(tmp_path / "scores.csv")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "scores.csv")
    assert table["label"].tolist() == list(out["label"]) and set(table.columns) >= {"score", "confidence", "p_bullish"}
    assert main(["analyze", str(tmp_path / "run"), "--file", str(tmp_path / "scores.csv"), "--column", "txt"]) == 1

    # a rerun resumes: same tokenizer file, no retraining of finished epochs
    vocab_before = (tmp_path / "run" / "tokenizer" / "vocab.txt").read_text()
    summary2, ok2 = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok2 and (tmp_path / "run" / "tokenizer" / "vocab.txt").read_text() == vocab_before
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"]["model"] == report["test"]["model"]


def test_fine_tuning_a_finbert_format_checkpoint_starts_from_its_weights(tmp_path):
    csv = keyword_csv(tmp_path / "k.csv", 120)
    train = 'model = "bert_classifier"\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-9\n'
    path = write_experiment(tmp_path / "x.toml", csv, train=train)
    text = path.read_text().replace("[tokenizer]\nvocab_size = 200\nmin_frequency = 1\n", "")
    path.write_text(text + f'\n[pretrained]\npath = "{FIXTURE}"\nlabels = "finbert"\n')
    experiment = load_experiment(path)
    summary, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok, summary
    meta = json.loads((tmp_path / "run" / "model" / "sentiment.json").read_text())
    assert meta["labels"] == "finbert" and meta["kwargs"]["num_labels"] == 3

    from trading_jax.models.bert_checkpoint import load_hf_bert
    from trading_jax.runs.sentiment import load_analyzer

    _, loaded, _ = load_hf_bert(FIXTURE)
    tuned = load_analyzer(tmp_path / "run").params
    # a learning rate of 1e-9 for one epoch: the classifier is the checkpoint's, not a fresh head
    np.testing.assert_allclose(tuned["classifier"]["kernel"], loaded["classifier"]["kernel"], atol=1e-6)

    path.write_text(path.read_text().replace('labels = "finbert"', 'labels = "twitter_financial_news"'))
    with pytest.raises(ConfigError, match="classes are 0 positive, 1 negative, 2 neutral"):
        run_experiment(load_experiment(path), tmp_path / "run2", show_progress=False)


def test_the_engine_refuses_float_augmentations_on_token_ids():
    from trading_jax.training.config import Dataset, TrainConfig
    from trading_jax.training.train import make_trainer

    x = {"input_ids": jnp.ones((8, 6), jnp.int32), "attention_mask": jnp.ones((8, 6), jnp.int32)}
    data = Dataset(x, jnp.zeros(8, jnp.int32), x, jnp.zeros(8, jnp.int32))
    cfg = TrainConfig(model="sentiment_bert", preset="tiny", task="classification", batch_size=4, noise_std=0.1)
    with pytest.raises(ValueError, match="noise_std > 0 perturbs float inputs"):
        make_trainer(cfg, data)


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="../shared/data is absent")
def test_the_shared_twitter_csv_and_its_experiment_file_load(monkeypatch):
    data = T.load_text_csv(SHARED_CSV)
    assert len(data.texts) == 9543 and data.scheme == "twitter_financial_news"
    assert np.bincount(data.labels).tolist() == [1442, 1923, 6178]  # bearish, bullish, neutral
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the file's paths are relative to the repository
    experiment = load_experiment("experiments/sentiment_twitter.toml")
    assert experiment.data.labels == "twitter_financial_news" and experiment.train.model == "sentiment_bert"
