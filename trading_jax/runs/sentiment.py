"""Sentiment experiment files (`algorithm = "sentiment"`): schema and runner.

A file has `name`, `seeds`, `vmap_seeds`, a `[data]` table (`TextDataSpec`: the CSV, its columns and label
scheme, the split), a `[train]` table (`TrainConfig`: model "sentiment_bert" or "bert_classifier", task
"classification"), an optional `[tokenizer]` table (`TokenizerSpec`, for a model trained from scratch), an
optional `[pretrained]` table (`PretrainedSpec`: a FinBERT-format folder to fine-tune) and `[checkpoint]`.
`run` then

1. takes the run folder (lock, refusal of a changed config or data: `trading_jax.runs.folder`);
2. reads the CSV (`trading_jax.data.text.load_text_csv`: one-line errors for empty texts and bad labels) and
   splits it at random into train / val / test with near-duplicate texts kept on one side
   (`split_groups`: the Twitter CSV has no timestamps, and the same headline recurs with another link);
3. from scratch: trains a WordPiece vocabulary on the training split only and saves it as
   `tokenizer/vocab.txt` (a rerun that resumes reuses it); with `[pretrained]`: uses the checkpoint's
   tokenizer, loads its weights (`trading_jax.models.bert_checkpoint.load_hf_bert`: the whole classifier for
   "bert_classifier", the encoder for "sentiment_bert", whose heads start fresh per seed), and refuses a
   checkpoint whose class order differs from the one the experiment names;
4. moves the file's labels into the model's label scheme by meaning (bearish = negative = down, ...);
5. trains every seed (`trading_jax.loop.fit`: checkpoints, resume, TensorBoard, progress) on token ids and
   attention masks padded to one length bucket; the sentiment network's confidence head learns whether its
   call is right (`training.losses.confidence_loss`);
6. scores each seed's best params on the test split (accuracy, macro-F1) next to a majority-class baseline
   and a TF-IDF + logistic-regression baseline (scikit-learn, C picked on the validation split), with
   a 95% Student-t interval over seeds and a bootstrap interval over test texts, and writes
   `results.json`, `results.md` and `model/` (each seed's best params as safetensors + `sentiment.json`),
   which `load_analyzer(run_dir)` turns into a `trading_jax.features.analyzer.SentimentAnalyzer`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results
from trading_jax.training.config import TrainConfig

__all__ = ["SentimentExperiment", "TextDataSpec", "TokenizerSpec", "PretrainedSpec", "load", "run", "load_analyzer",
           "tfidf_baseline", "bootstrap_interval"]

log = get_logger(__name__)
MODELS = ("sentiment_bert", "bert_classifier")
SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "num_labels", "pad_token_id", "layer_norm_eps")
BOOTSTRAP = 1000


@dataclasses.dataclass(frozen=True)
class TextDataSpec:
    """The `[data]` table: labelled texts and their split.

    Attributes:
        source: a CSV file of texts and integer labels.
        text_column, label_column: its columns.
        labels: the file's label scheme (`trading_jax.data.text.LABEL_SCHEMES`).
        train, val, test: fractions of the distinct texts (near-duplicates count once and stay together).
        split_seed: the random split's seed (the same for every training seed: seeds vary the model only).
        max_length: tokens per text, [CLS] and [SEP] included (longer texts are truncated and counted).
        strip_urls: replace links by the word "http" before tokenising (`data.text.clean_text`).
        limit: use only the first `limit` rows of the file (quick trials and tests).
    """

    source: str
    text_column: str = "text"
    label_column: str = "label"
    labels: str = "twitter_financial_news"
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    split_seed: int = 0
    max_length: int = 64
    strip_urls: bool = True
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """The `[tokenizer]` table (from scratch only): the WordPiece vocabulary trained on the training split."""

    vocab_size: int = 8000
    lowercase: bool = True
    min_frequency: int = 2


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
    """The `[pretrained]` table: a Hugging Face BERT folder (config.json, vocab.txt or tokenizer.json, and
    model.safetensors or pytorch_model.bin), e.g. a download of ProsusAI/finbert.

    Attributes:
        path: the folder.
        labels: the label scheme of the checkpoint's classes (default: read from its config.json id2label;
            "finbert" for ProsusAI/finbert). A checkpoint whose named classes differ is refused.
    """

    path: str
    labels: str | None = None


@dataclasses.dataclass(frozen=True)
class SentimentExperiment:
    """A sentiment experiment (module docstring)."""

    name: str
    data: TextDataSpec
    train: TrainConfig
    tokenizer: TokenizerSpec = TokenizerSpec()
    pretrained: PretrainedSpec | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    vmap_seeds: bool = True
    keep_best: int = 1
    every_epochs: int = 1
    file: str = "<experiment>"

    algorithm = "sentiment"


DATA_CHECKS = {"train": S.in_interval(0, 1, low_open=True, high_open=True), "val": S.in_interval(0, 1, high_open=True),
               "test": S.in_interval(0, 1, low_open=True, high_open=True), "split_seed": S.at_least(0),
               "max_length": S.at_least(4), "limit": S.at_least(10)}
TOKENIZER_CHECKS = {"vocab_size": S.at_least(64), "min_frequency": S.at_least(1)}


def load(raw: dict, file) -> SentimentExperiment:
    """A `SentimentExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.data.text import LABEL_SCHEMES
    from trading_jax.runs.supervised import TRAIN_CHECKS, check_model, load_top

    S.check_keys(raw, {"algorithm", "name", "seeds", "vmap_seeds", "data", "train", "tokenizer", "pretrained",
                       "checkpoint"}, file, "")
    for table in ("data", "train", "tokenizer", "pretrained", "checkpoint"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    train = dict(raw.get("train", {}))
    model = train.get("model")
    if model not in MODELS:
        raise S.ConfigError(f"{file}: [train] model = {model!r}: a sentiment experiment trains one of "
                            f"{', '.join(MODELS)}")
    train.setdefault("task", "classification")
    if train["task"] != "classification":
        raise S.ConfigError(f"{file}: [train] task = {train['task']!r}: sentiment is classification; leave task out")
    check_model(train, file)
    train.setdefault("model_kwargs", {})
    config = S.build(TrainConfig, train, file, "train", TRAIN_CHECKS, convert={"model_kwargs": S.kwargs_pairs})
    if "data" not in raw:
        raise S.ConfigError(f"{file}: needs a [data] table with source = the labelled CSV")
    data = S.build(TextDataSpec, raw["data"], file, "data", {**DATA_CHECKS, "labels": S.one_of(*LABEL_SCHEMES)})
    if data.train + data.val + data.test > 1.0 + 1e-9:
        raise S.ConfigError(f"{file}: [data] train + val + test = {data.train + data.val + data.test:g}: "
                            "expected at most 1")
    if data.val <= 0:
        raise S.ConfigError(f"{file}: [data] val = {data.val:g}: the best epoch and the baseline's C are picked on "
                            "the validation split; give val > 0")
    if not Path(data.source).is_file():
        raise S.ConfigError(f"{file}: [data] source = {data.source!r}: no such file (paths are relative to the "
                            "working directory)")
    tokenizer = S.build(TokenizerSpec, raw.get("tokenizer", {}), file, "tokenizer", TOKENIZER_CHECKS)
    pretrained = None
    if "pretrained" in raw:
        pretrained = S.build(PretrainedSpec, raw["pretrained"], file, "pretrained",
                             {"labels": S.one_of(*LABEL_SCHEMES)})
        if not (Path(pretrained.path) / "config.json").is_file():
            raise S.ConfigError(f"{file}: [pretrained] path = {pretrained.path!r}: no config.json there (give a "
                                "Hugging Face BERT folder, e.g. a download of ProsusAI/finbert)")
        if "tokenizer" in raw:
            raise S.ConfigError(f"{file}: [tokenizer] is for a model trained from scratch; a [pretrained] model "
                                "uses its own vocabulary: remove [tokenizer]")
        fixed = sorted(set(config.model_config()) & set(SIZE_KEYS))
        if fixed or config.preset is not None:
            what = ", ".join(fixed) if fixed else f"preset = {config.preset!r}"
            raise S.ConfigError(f"{file}: [train] {what}: a [pretrained] model takes its sizes from its "
                                "config.json; leave them out (dropout rates may be set)")
    if config.noise_std or config.mixup_alpha or config.fgsm_epsilon or config.curriculum:
        raise S.ConfigError(f"{file}: [train] noise_std, mixup_alpha, fgsm_epsilon and curriculum perturb or rank "
                            "float price windows; a text model's inputs are token ids: leave them out")
    top = load_top(raw, file)
    return SentimentExperiment(data=data, train=config, tokenizer=tokenizer, pretrained=pretrained, file=str(file),
                               **top)


# ------------------------------------------------------------------------------------------- data


def _prepare(experiment: SentimentExperiment):
    """The texts, split indices and the data fingerprint (before any file is written to the run folder)."""
    from trading_jax.data.text import load_text_csv, split_groups

    spec = experiment.data
    dataset = load_text_csv(spec.source, spec.text_column, spec.label_column, spec.labels, spec.limit)
    try:
        parts = split_groups(dataset.groups, spec.train, spec.val, spec.test, spec.split_seed)
    except ValueError as error:
        raise ValueError(f"{spec.source}: {error}; give more labelled rows (or a larger [data] limit)") from None
    if dataset.conflicts:
        log.warning("%s: %d groups of near-duplicate texts carry different labels (kept; each stays on one side of "
                    "the split)", spec.source, dataset.conflicts)
    fingerprint = {"files": file_fingerprints([spec.source]), "rows": len(dataset.texts),
                   "samples": {k: int(len(p)) for k, p in zip(("train", "val", "test"), parts)},
                   "conflicting_groups": dataset.conflicts}
    return dataset, parts, fingerprint


def _model_labels(experiment: SentimentExperiment, info: dict | None) -> str:
    """The label scheme of the model's classes: the checkpoint's (named or read from id2label), else the data's."""
    from trading_jax.data.text import check_id2label, scheme_of_id2label

    if experiment.pretrained is None:
        return experiment.data.labels
    id2label = (info or {}).get("id2label")
    where = f"{experiment.file}: [pretrained] {experiment.pretrained.path}"
    if experiment.pretrained.labels is not None:
        try:
            check_id2label(id2label, experiment.pretrained.labels, where)
        except ValueError as error:
            raise S.ConfigError(str(error)) from None
        return experiment.pretrained.labels
    found = scheme_of_id2label(id2label)
    if found is None and experiment.train.model == "bert_classifier":
        raise S.ConfigError(f"{where}: config.json's id2label ({id2label}) names no known label scheme: set "
                            "[pretrained] labels to the order of its classes")
    return found or experiment.data.labels


def _tokenizer(experiment: SentimentExperiment, out: Path, train_texts, resume: bool):
    from trading_jax.data.text import load_tokenizer, train_wordpiece_vocab

    if experiment.pretrained is not None:
        return load_tokenizer(experiment.pretrained.path)
    folder = out / "tokenizer"
    if not (resume and (folder / "vocab.txt").is_file()):
        spec = experiment.tokenizer
        train_wordpiece_vocab(train_texts, spec.vocab_size, folder, spec.lowercase, spec.min_frequency)
    return load_tokenizer(folder)


def _model_config(experiment: SentimentExperiment, tokenizer, hf_kwargs: dict | None) -> TrainConfig:
    """The training config with the sizes that come from the data or the checkpoint (never edited in place)."""
    cfg = experiment.train
    kwargs = dict(cfg.model_config())
    if hf_kwargs is not None:
        derived = {k: v for k, v in hf_kwargs.items() if k not in kwargs}
        if len(tokenizer) > derived["vocab_size"]:  # ids past the embedding table would be clamped, silently
            raise S.ConfigError(f"{experiment.file}: [pretrained] {experiment.pretrained.path}: the tokenizer has "
                                f"{len(tokenizer)} tokens but config.json's vocab_size is {derived['vocab_size']}: "
                                "the folder's tokenizer and weights do not belong together")
        return cfg.replace(model_kwargs={**derived, **kwargs})
    vocab = len(tokenizer)
    given = kwargs.get("vocab_size")
    if given is not None and given != vocab:
        raise S.ConfigError(f"{experiment.file}: [train.model_kwargs] vocab_size = {given}: the tokenizer has {vocab} "
                            "tokens; leave vocab_size out (it is set from the tokenizer)")
    kwargs.update(vocab_size=vocab, pad_token_id=int(tokenizer.pad_token_id or 0), num_labels=3)
    model = cfg.replace(model_kwargs=kwargs).build_model()
    positions = getattr(model, "max_position_embeddings", None)
    if positions is not None and positions < experiment.data.max_length:
        raise S.ConfigError(f"{experiment.file}: [data] max_length = {experiment.data.max_length} exceeds the model's "
                            f"max_position_embeddings = {positions}; lower max_length or raise it in "
                            "[train.model_kwargs]")
    return cfg.replace(model_kwargs=kwargs)


# ------------------------------------------------------------------------------------- baselines


def tfidf_baseline(train_texts, y_train, val_texts, y_val, test_texts, cs=(0.1, 1.0, 10.0)) -> tuple[np.ndarray, dict]:
    """A TF-IDF (word 1-2 grams, sublinear tf) + multinomial logistic regression baseline (scikit-learn).

    Fitted on the training texts only; C is chosen on the validation split by macro-F1.

    Returns:
        `(test predictions int [n_test], {"C": chosen, "val_macro_f1": {C: score}})`.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(train_texts)
    x_val, x_test = vectorizer.transform(val_texts), vectorizer.transform(test_texts)
    scores, models = {}, {}
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        scores[c] = float(f1_score(y_val, clf.predict(x_val), average="macro"))
        models[c] = clf
    best = max(scores, key=scores.get)
    return models[best].predict(x_test).astype(np.int32), {"C": best, "val_macro_f1": scores}


def _accuracy_f1(pred, labels, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 along the last axis (`[..., n]` predictions and labels).

    Macro-F1 = mean_k 2 TP_k / (2 TP_k + FP_k + FN_k) over all `n_classes` classes, a class with no true and no
    predicted sample scoring 0 (scikit-learn's `f1_score(average="macro", labels=[0, 1, 2], zero_division=0)`).
    """
    pred, labels = np.asarray(pred), np.asarray(labels)
    f1 = []
    for k in range(n_classes):
        tp = ((pred == k) & (labels == k)).sum(-1)
        wrong = ((pred == k) != (labels == k)).sum(-1)  # FP + FN
        f1.append(np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
    return (pred == labels).mean(-1), np.mean(f1, axis=0)


def _scores(pred, labels) -> dict[str, float]:
    accuracy, f1 = _accuracy_f1(pred, labels)
    return {"accuracy": float(accuracy), "macro_f1": float(f1)}


def bootstrap_interval(pred, labels, seed: int = 0, n: int = BOOTSTRAP) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals of accuracy and macro-F1 over the test texts (`n` resamples)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    index = np.random.default_rng(seed).integers(0, len(labels), (n, len(labels)))
    accuracy, f1 = _accuracy_f1(pred[index], labels[index])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            for k, v in (("accuracy", accuracy), ("macro_f1", f1))}


# ------------------------------------------------------------------------------------------- run


def _config_record(experiment: SentimentExperiment) -> dict:
    record = dataclasses.asdict(experiment)
    record.pop("file")
    if record["pretrained"] is None:
        record.pop("pretrained")
    else:
        record.pop("tokenizer")
    if not experiment.vmap_seeds:
        record.pop("seeds")
    return record


def _save_params(path: Path, params) -> None:
    from flax import traverse_util
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}, str(tmp))
    tmp.replace(path)


def _logits_fn(model):
    """`jit(params, x) -> logits`, built once per run so every seed's predictions reuse one compiled program."""
    return jax.jit(lambda p, xb: model.apply({"params": p}, xb, train=False)["logits"])


def _predict_logits(apply, params, x: dict, batch: int = 256) -> np.ndarray:
    n = len(x["input_ids"])
    outs = [apply(params, {k: jnp.asarray(v[i:i + batch]) for k, v in x.items()}) for i in range(0, n, batch)]
    return np.concatenate([np.asarray(o, np.float32) for o in outs])


def run(experiment: SentimentExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train every seed, evaluate on the held-out texts against the baselines (module docstring).

    Returns:
        `(summary line, ok)`: ok is False when a seed FAILED (the table says why).
    """
    from trading_jax.data.text import clean_text, encode_texts, remap_labels
    from trading_jax.runs.supervised import failed_reason, train_seeds
    from trading_jax.training.config import Dataset
    from trading_jax.training.train import make_trainer

    out = Path(out_dir)
    spec = experiment.data
    with RunFolder(out, overwrite=overwrite) as folder:
        dataset, (i_train, i_val, i_test), fingerprint = _prepare(experiment)
        hf_kwargs = init_params = info = None
        if experiment.pretrained is not None:
            from trading_jax.models.bert_checkpoint import load_hf_bert

            head = "classifier" if experiment.train.model == "bert_classifier" else "sentiment"
            try:
                hf_kwargs, init_params, info = load_hf_bert(experiment.pretrained.path, head=head)
            except ValueError as error:
                raise S.ConfigError(f"{experiment.file}: [pretrained] {error}") from None
            fingerprint["checkpoint"] = {"weights": file_fingerprints([info["weights_file"]])}
        labels_scheme = _model_labels(experiment, info)
        state = folder.claim(_config_record(experiment), fingerprint)
        if state == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        texts = [clean_text(t, spec.strip_urls) for t in dataset.texts]
        tokenizer = _tokenizer(experiment, out, [texts[i] for i in i_train], resume=state == "resume")
        cfg = _model_config(experiment, tokenizer, hf_kwargs)
        y = remap_labels(dataset.labels, spec.labels, labels_scheme)
        encoded, truncated = encode_texts(tokenizer, texts, spec.max_length)
        if truncated:
            log.info("%s: %d of %d texts were longer than max_length = %d tokens and were truncated", experiment.name,
                     truncated, len(texts), spec.max_length)
        rows = lambda idx: {k: jnp.asarray(v[idx]) for k, v in encoded.items()}  # noqa: E731
        data = Dataset(rows(i_train), jnp.asarray(y[i_train]), rows(i_val), jnp.asarray(y[i_val]))
        trainer = make_trainer(cfg, data, init_params=init_params)
        model = cfg.build_model()
        log.info("%s: %d / %d / %d texts (train/val/test), %d tokens per text, vocabulary %d, classes %s",
                 experiment.name, len(i_train), len(i_val), len(i_test), encoded["input_ids"].shape[1],
                 len(tokenizer), labels_scheme)
        x_test, y_test = rows(i_test), y[i_test]
        logits_fn = _logits_fn(model)
        per_seed, preds = [], {}
        for seed, result, seconds in train_seeds(experiment, trainer, out, show_progress):
            history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
            failure = failed_reason(history, cfg.batch_size)
            record = {"seed": seed, "seconds": seconds, "best_epoch": int(result.best_epoch), "history": history,
                      "failed": failure}
            if failure is None:
                logits = _predict_logits(logits_fn, result.best_params, x_test)
                if not np.isfinite(logits).all():
                    record["failed"] = failure = "the model gave NaN or inf logits on the test texts"
                else:
                    preds[seed] = logits.argmax(-1)
                    record["test"] = _scores(preds[seed], y_test)
                    _save_params(out / "model" / f"seed_{seed}.safetensors", result.best_params)
            per_seed.append(record)
        base_pred, base_info = tfidf_baseline([texts[i] for i in i_train], y[i_train], [texts[i] for i in i_val],
                                              y[i_val], [texts[i] for i in i_test])
        majority = int(np.bincount(y[i_train], minlength=3).argmax())
        baselines = {"tfidf_logistic": base_pred, "majority_class": np.full_like(y_test, majority)}
        rows_out = _rows(per_seed, preds, baselines, y_test)
        heads = ["confidence"] if experiment.train.model == "sentiment_bert" else []
        (out / "model").mkdir(exist_ok=True)
        (out / "model" / "sentiment.json").write_text(json.dumps({
            "model": cfg.model, "preset": cfg.preset, "kwargs": cfg.model_config(), "labels": labels_scheme,
            "max_length": spec.max_length, "strip_urls": spec.strip_urls, "heads": heads,
            # the run's own vocabulary relative to the run folder (which may move); a checkpoint's by its full path
            "tokenizer": str(Path(experiment.pretrained.path).resolve()) if experiment.pretrained else "tokenizer",
            "seeds": sorted(preds), "untrained_heads": ["price_impact"] if cfg.model == "sentiment_bert" else [],
        }, indent=1, default=str) + "\n")
        report = {"experiment": experiment.name, "algorithm": "sentiment", "labels": labels_scheme,
                  "samples": fingerprint["samples"], "truncated_texts": truncated,
                  "leak_check": _leak_check(dataset.groups, i_train, i_val, i_test),
                  "baseline_tfidf": base_info, "seeds": per_seed, "test": rows_out}
        failed = [s for s in per_seed if s["failed"]]
        write_results(out, report, _markdown(experiment, report, labels_scheme))
        model_row = rows_out["model"]
        summary = (f"{experiment.name}: test accuracy {cell(model_row.get('accuracy'))}, macro-F1 "
                   f"{cell(model_row.get('macro_f1'))} over {len(preds)} seed(s); TF-IDF + logistic regression "
                   f"{rows_out['tfidf_logistic']['accuracy']['mean']:.4f} / "
                   f"{rows_out['tfidf_logistic']['macro_f1']['mean']:.4f} -> {out / 'results.md'}")
        if failed:
            summary = f"{experiment.name}: {FAILED}: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failed)
        return summary, not failed


def _leak_check(groups, *parts) -> dict:
    """Texts of one near-duplicate group on two sides of the split (0 by construction; recorded as a check)."""
    sides = [set(np.asarray(groups)[p].tolist()) for p in parts]
    return {"train_test_shared_groups": len(sides[0] & sides[2]), "train_val_shared_groups": len(sides[0] & sides[1])}


def _rows(per_seed, preds: dict, baselines: dict, y_test) -> dict:
    """Test rows: the model (mean and t-interval over seeds, plus the bootstrap interval of each seed's
    predictions pooled) and the baselines (deterministic given the split: a bootstrap interval over texts)."""
    from trading_jax.evaluation.stats import summarize

    out = {}
    ok = [s for s in per_seed if not s["failed"]]
    if ok:
        out["model"] = {k: summarize([s["test"][k] for s in ok], f"model {k}") for k in ("accuracy", "macro_f1")}
        first = preds[ok[0]["seed"]]
        out["model"]["bootstrap_seed_%d" % ok[0]["seed"]] = bootstrap_interval(first, y_test)
    else:
        out["model"] = {}
    for name, pred in baselines.items():
        scores = _scores(pred, y_test)
        out[name] = {k: {"mean": v, "n": 1} for k, v in scores.items()}
        out[name]["bootstrap"] = bootstrap_interval(pred, y_test)
        if ok:  # each seed's score minus the baseline's on the same test texts: a t-interval over seeds
            out[f"model_minus_{name}"] = {k: summarize([s["test"][k] - scores[k] for s in ok], f"model - {name} {k}")
                                          for k in ("accuracy", "macro_f1")}
    return out


def _markdown(experiment: SentimentExperiment, report: dict, labels_scheme: str) -> str:
    rows = report["test"]
    samples = report["samples"]
    lines = [f"# {experiment.name}", "",
             f"Sentiment classification ({experiment.train.model}"
             + (f", fine-tuned from {experiment.pretrained.path}" if experiment.pretrained else ", trained from scratch")
             + f") on {experiment.data.source}: {samples['train']} / {samples['val']} / {samples['test']} texts "
             "(train / val / test, a random split with near-duplicate texts kept on one side: "
             f"{report['leak_check']['train_test_shared_groups']} shared between train and test). "
             f"Classes in the {labels_scheme!r} order. Scores on the held-out test texts: the model's mean over "
             f"{len(experiment.seeds)} seeds with a 95% Student-t interval; for each baseline (deterministic given the "
             "split) a 95% bootstrap interval over the test texts.", "",
             "| predictor | accuracy | macro-F1 | 95% bootstrap (accuracy; macro-F1) |", "| --- | --- | --- | --- |"]
    model = rows.get("model") or {}
    boot = next((v for k, v in model.items() if k.startswith("bootstrap")), None)
    boot_text = (f"{boot['accuracy'][0]:.4f}-{boot['accuracy'][1]:.4f}; {boot['macro_f1'][0]:.4f}-{boot['macro_f1'][1]:.4f}"
                 " (first seed)") if boot else ""
    if model:
        lines.append(f"| model | {cell(model['accuracy'])} | {cell(model['macro_f1'])} | {boot_text} |")
    else:
        lines.append(f"| model | {FAILED} | {FAILED} | |")
    for name in ("tfidf_logistic", "majority_class"):
        r = rows[name]
        b = r["bootstrap"]
        lines.append(f"| {name} | {r['accuracy']['mean']:.4f} | {r['macro_f1']['mean']:.4f} | "
                     f"{b['accuracy'][0]:.4f}-{b['accuracy'][1]:.4f}; {b['macro_f1'][0]:.4f}-{b['macro_f1'][1]:.4f} |")
    for name in ("tfidf_logistic", "majority_class"):
        diff = rows.get(f"model_minus_{name}")
        if diff:
            lines.append(f"| model - {name} (paired, per seed) | {cell(diff['accuracy'])} | {cell(diff['macro_f1'])} | |")
    lines += ["", "| seed | accuracy | macro-F1 | best epoch | seconds |", "| --- | --- | --- | --- | --- |"]
    for s in report["seeds"]:
        if s["failed"]:
            lines.append(f"| {s['seed']} | {FAILED}: {s['failed']} | | | |")
        else:
            lines.append(f"| {s['seed']} | {s['test']['accuracy']:.4f} | {s['test']['macro_f1']:.4f} | "
                         f"{s['best_epoch']} | {s['seconds']:.1f} |")
    lines += ["", f"TF-IDF baseline: C = {report['baseline_tfidf']['C']} chosen on the validation split. "
              f"{report['truncated_texts']} texts were truncated to {experiment.data.max_length} tokens.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- analyzer


def load_analyzer(run_dir: str | Path, seed: int | None = None, dtype: str = "float32"):
    """A `trading_jax.features.analyzer.SentimentAnalyzer` of a finished sentiment run's `seed` (default: its
    first trained seed; a seed is never picked by its test scores).

    Raises:
        ValueError: not a sentiment run folder, or no such seed (one line naming the folder).
    """
    from flax import traverse_util
    from safetensors.numpy import load_file

    from trading_jax.data.text import load_tokenizer
    from trading_jax.features.analyzer import SentimentAnalyzer
    from trading_jax.models import create

    folder = Path(run_dir) / "model"
    meta_path = folder / "sentiment.json"
    if not meta_path.is_file():
        raise ValueError(f"{run_dir}: no model/sentiment.json; is this a finished sentiment run?")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    seeds = meta["seeds"]
    if not seeds:
        raise ValueError(f"{run_dir}: every seed failed; there is no model to load")
    chosen = seeds[0] if seed is None else seed
    if chosen not in seeds:
        raise ValueError(f"{run_dir}: has no trained seed {seed}; its seeds are {', '.join(map(str, seeds))}")
    params = traverse_util.unflatten_dict(load_file(str(folder / f"seed_{chosen}.safetensors")), sep="/")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["kwargs"].items()}
    model = create(meta["model"], preset=meta["preset"], **kwargs)
    tokenizer = Path(meta["tokenizer"]) if Path(meta["tokenizer"]).is_absolute() else Path(run_dir) / meta["tokenizer"]
    return SentimentAnalyzer(model, params, load_tokenizer(tokenizer), meta["labels"], meta["max_length"],
                             meta["strip_urls"], dtype=dtype, heads=meta["heads"])

