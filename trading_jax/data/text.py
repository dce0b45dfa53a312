"""Labelled financial text: reading CSVs, explicit label schemes, leak-free splits, tokenisers and encoding.

Label schemes are explicit because the datasets disagree. Each scheme names its classes in id order, and
each class has a meaning (bearish, neutral, bullish) by which labels are moved between schemes:

    twitter_financial_news   0 bearish, 1 bullish, 2 neutral   (the shared Twitter Financial News CSV)
    finbert                  0 positive, 1 negative, 2 neutral (ProsusAI/finbert's config.json id2label)
    direction                0 down, 1 flat, 2 up              (`trading_jax.data.labels` DOWN, FLAT, UP)

`remap_labels(y, "twitter_financial_news", "finbert")` turns 0 (bearish) into 1 (negative), and
`check_id2label(checkpoint_id2label, "finbert", where)` refuses a checkpoint whose classes are in another order.

Tokenisers come from `transformers` (`load_tokenizer`), and are checked against their vocabulary file: in
transformers 5 both `BertTokenizer(vocab_file=...)` and `BertTokenizerFast(vocab_file=...)` silently build a
5-token vocabulary (every word becomes [UNK]); `load_tokenizer` uses `from_pretrained(folder)`, which reads
`vocab.txt` correctly, and raises if the loaded size differs from the file's.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["LABEL_SCHEMES", "MEANINGS", "TextDataset", "remap_labels", "check_id2label", "scheme_of_id2label",
           "normalize_text", "clean_text", "load_text_csv", "split_groups", "load_tokenizer", "train_wordpiece_vocab",
           "encode_texts", "length_bucket", "LENGTH_BUCKETS", "SPECIAL_TOKENS"]

LABEL_SCHEMES: dict[str, tuple[str, ...]] = {
    "twitter_financial_news": ("bearish", "bullish", "neutral"),
    "finbert": ("positive", "negative", "neutral"),
    "direction": ("down", "flat", "up"),
}
"""Class names in id order, per scheme."""

MEANINGS = {"bearish": "bearish", "negative": "bearish", "down": "bearish",
            "neutral": "neutral", "flat": "neutral",
            "bullish": "bullish", "positive": "bullish", "up": "bullish"}
"""What each class name means (labels move between schemes by meaning)."""

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def _scheme(name: str) -> tuple[str, ...]:
    if name not in LABEL_SCHEMES:
        raise ValueError(f"unknown label scheme {name!r}; known: {', '.join(LABEL_SCHEMES)}")
    return LABEL_SCHEMES[name]


def remap_labels(labels, source: str, target: str) -> np.ndarray:
    """Integer labels of scheme `source` as labels of scheme `target`, matched by meaning.

    Args:
        labels: int `[N]` in `0 .. len(source classes) - 1`.
        source, target: scheme names (`LABEL_SCHEMES`).

    Returns:
        int32 `[N]`.
    """
    src, dst = _scheme(source), _scheme(target)
    where = {MEANINGS[name]: i for i, name in enumerate(dst)}
    table = np.array([where[MEANINGS[name]] for name in src], np.int32)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(src)):
        bad = int(np.flatnonzero((labels < 0) | (labels >= len(src)))[0])
        raise ValueError(f"label {int(labels[bad])} at row {bad} is not a {source!r} class "
                         f"(0 .. {len(src) - 1}: {', '.join(src)})")
    return table[labels]


def scheme_of_id2label(id2label: Mapping[int, str] | None) -> str | None:
    """The scheme whose classes are `id2label`'s names in order (case-insensitive), or None."""
    if not id2label:
        return None
    names = tuple(str(id2label[i]).lower() for i in sorted(int(k) for k in id2label))
    return next((name for name, classes in LABEL_SCHEMES.items() if classes == names), None)


def check_id2label(id2label: Mapping[int, str] | None, scheme: str, where: str) -> None:
    """Refuse a checkpoint whose named classes are not `scheme`'s, in `scheme`'s order (one line naming `where`).

    A checkpoint with generic names (LABEL_0, ...) or none says nothing about its order and passes.
    """
    classes = _scheme(scheme)
    if not id2label:
        return
    names = tuple(str(id2label[i]).lower() for i in sorted(int(k) for k in id2label))
    if all(re.fullmatch(r"label_\d+", n) for n in names):
        return
    if names != classes:
        found = scheme_of_id2label(id2label)
        hint = f" (that is the {found!r} scheme)" if found else ""
        raise ValueError(f"{where}: the checkpoint's classes are {', '.join(f'{i} {n}' for i, n in enumerate(names))}"
                         f"{hint}, but the experiment says its labels are {scheme!r} "
                         f"({', '.join(f'{i} {n}' for i, n in enumerate(classes))}): set the model's label scheme to "
                         "the checkpoint's")


def normalize_text(text: str) -> str:
    """Lower case, URLs removed, whitespace collapsed: the key under which near-duplicate texts are grouped."""
    return _SPACE.sub(" ", _URL.sub(" ", text.lower())).strip()


def clean_text(text: str, strip_urls: bool = True) -> str:
    """The text a sentiment model sees: links replaced by the word "http" (a t.co link's random characters
    would otherwise become a dozen meaningless word pieces), whitespace collapsed."""
    if strip_urls:
        text = _URL.sub(" http ", text)
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class TextDataset:
    """Labelled texts read from a file.

    Attributes:
        texts: `[N]` strings, as in the file.
        labels: int32 `[N]` in the file's scheme.
        scheme: the label scheme's name.
        groups: int `[N]`: rows with the same `normalize_text` share a group (splits keep a group together).
        conflicts: groups whose rows carry different labels.
        source: the file.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    scheme: str
    groups: np.ndarray
    conflicts: int
    source: str


def load_text_csv(path: str | Path, text_column: str = "text", label_column: str = "label",
                  scheme: str = "twitter_financial_news", limit: int | None = None) -> TextDataset:
    """Read a CSV of labelled texts, refusing bad rows with one line naming the file, column and row.

    Args:
        path: a CSV file with a text column and a label column: class ids of `scheme`, or its class names
            (e.g. "bearish", case-insensitive).
        text_column, label_column: their names.
        scheme: the file's label scheme (`LABEL_SCHEMES`).
        limit: keep only the first `limit` rows (after the checks of those rows).

    Raises:
        ValueError: missing file or column, an empty or missing text, a label that is missing, not a whole
            number, or not a class of `scheme`.
    """
    import pandas as pd

    classes = _scheme(scheme)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (give a CSV with a {text_column!r} and a {label_column!r} column)")
    try:
        frame = pd.read_csv(path, dtype={text_column: "string"}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as CSV: {str(error).splitlines()[0]}") from None
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise ValueError(f"{path}: no column {column!r}; columns: {', '.join(map(str, frame.columns))} "
                             "(name the columns with text_column / label_column)")
    if limit is not None:
        frame = frame.iloc[:limit]
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    texts = frame[text_column]
    empty = texts.isna() | (texts.fillna("").str.strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(f"{path}: column {text_column!r} is empty at line {row + 2} ({int(empty.sum())} empty in "
                         "all): drop or fill those rows")
    raw = pd.to_numeric(frame[label_column], errors="coerce").to_numpy(np.float64)
    names = frame[label_column].astype(str).str.strip().str.lower()
    if np.isnan(raw).all() and names.isin(classes).all():  # labels written as the scheme's class names
        raw = names.map({name: i for i, name in enumerate(classes)}).to_numpy(np.float64)
    bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0) | (raw >= len(classes))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = frame[label_column].iloc[row]
        value = value.item() if hasattr(value, "item") else value
        shown = "an empty value" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)
        raise ValueError(f"{path}: column {label_column!r} has {shown} at line {row + 2}: "
                         f"expected a {scheme!r} class id 0 .. {len(classes) - 1} "
                         f"({', '.join(f'{i} {n}' for i, n in enumerate(classes))}) or a class name; "
                         f"{int(bad.sum())} bad in all")
    labels = raw.astype(np.int32)
    keys = [normalize_text(t) for t in texts.tolist()]
    _, groups = np.unique(np.asarray(keys, object), return_inverse=True)
    per_group = pd.Series(labels).groupby(groups).nunique()
    return TextDataset(tuple(texts.tolist()), labels, scheme, groups.astype(np.int64), int((per_group > 1).sum()),
                       str(path))


def split_groups(groups, train: float, val: float, test: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of a random train / val / test split that never puts one group on two sides.

    Texts have no time order here (the Twitter CSV carries no timestamps), so the split is random, drawn from
    `seed`; near-duplicate texts (one `normalize_text`, e.g. the same headline with another link) form a group
    and stay together, so a test text is never a training text with a new URL. Fractions are of groups.

    Returns:
        sorted int64 index arrays `(train, val, test)`.
    """
    groups = np.asarray(groups)
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(unique)
    n = len(unique)
    n_train, n_val = int(round(train * n)), int(round(val * n))
    n_test = min(int(round(test * n)), n - n_train - n_val)
    if min(n_train, n_test) < 1 or (val > 0 and n_val < 1):
        raise ValueError(f"{n} distinct texts are too few for a {train:g} / {val:g} / {test:g} split")
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:n_train + n_val + n_test]
    return tuple(np.sort(np.flatnonzero(np.isin(groups, part))) for part in parts)


# ----------------------------------------------------------------------------------------- tokenisers


def _vocab_size(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.rstrip("\n"))


def load_tokenizer(path: str | Path):
    """A `transformers` BERT tokenizer from a folder (with `tokenizer.json` or `vocab.txt`) or a `vocab.txt` file.

    Folders go through `AutoTokenizer.from_pretrained` when they hold `tokenizer.json`, else
    `BertTokenizer.from_pretrained`; the tokenizer's size is checked against `vocab.txt` when there is one.

    Raises:
        ValueError: no such path, no vocabulary in the folder, or a tokenizer whose size differs from the
            vocabulary file's (the transformers 5 `vocab_file=` pitfall).
    """
    import logging as _logging

    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise ValueError(f"{path}: no such tokenizer folder or vocab.txt")
    vocab = folder / "vocab.txt" if not path.is_file() else path
    if path.is_file() and path.name != "vocab.txt":
        raise ValueError(f"{path}: give a folder, or a file named vocab.txt")
    if not (folder / "tokenizer.json").exists() and not vocab.exists():
        raise ValueError(f"{folder}: no tokenizer.json or vocab.txt (a BERT checkpoint folder holds one of them)")
    quiet = _logging.getLogger("transformers")
    level = quiet.level
    quiet.setLevel(_logging.ERROR)
    try:
        if (folder / "tokenizer.json").exists():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        else:
            from transformers import BertTokenizer

            tokenizer = BertTokenizer.from_pretrained(str(folder))
    finally:
        quiet.setLevel(level)
    if vocab.exists():
        expected = _vocab_size(vocab)
        if len(tokenizer) < expected:
            raise ValueError(f"{vocab}: the tokenizer loaded {len(tokenizer)} tokens but the file lists {expected} "
                             "(a transformers version that ignores vocab.txt?); load the folder with "
                             "BertTokenizer.from_pretrained")
    return tokenizer


def train_wordpiece_vocab(texts: Sequence[str], vocab_size: int, out_dir: str | Path, lowercase: bool = True,
                          min_frequency: int = 2) -> Path:
    """Build a BERT WordPiece vocabulary from `texts` (the training split only) and write `out_dir/vocab.txt`.

    Deterministic: the same texts give the same file, byte for byte. (The `tokenizers` library's WordPiece
    trainer does not: it numbers continuing pieces in hash-map order and breaks ties between equally frequent
    merges by those numbers, so two runs give different vocabularies: huggingface/tokenizers#1794.)

    Words come from BERT's own normaliser and pre-tokeniser (`tokenizers`: lower case, accents stripped,
    punctuation split off). The file holds, in order: `SPECIAL_TOKENS` ([PAD] = 0, [UNK], [CLS], [SEP],
    [MASK]); every character seen at least `min_frequency` times, alone and as a continuing piece ("##e"); then
    the most frequent whole words and word endings ("##ing", "##s": the last 2 to 4 characters of a word
    occurring `min_frequency` times or more), ranked by count with ties in alphabetical order, up to
    `vocab_size`. BERT's greedy longest-match-first WordPiece then reads a known word as one token and an
    unknown one as its longest known start plus endings or characters.

    Returns:
        the path of `vocab.txt`.
    """
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise ValueError(f"vocab_size = {vocab_size} is too small for a WordPiece vocabulary (at least 31)")
    normalizer = BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
    splitter = BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars: Counter = Counter()
    endings: Counter = Counter()
    for word, count in words.items():
        for ch in word:
            chars[ch] += count
        for n in range(2, 5):
            if len(word) > n:
                endings["##" + word[-n:]] += count
    alphabet = sorted(ch for ch, count in chars.items() if count >= min_frequency)
    vocab = list(SPECIAL_TOKENS) + alphabet + ["##" + ch for ch in alphabet]
    taken = set(vocab)
    candidates = [(count, token) for token, count in (*words.items(), *endings.items())
                  if count >= min_frequency and token not in taken]
    candidates.sort(key=lambda c: (-c[0], c[1]))
    vocab += [token for _, token in candidates[: max(0, vocab_size - len(vocab))]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vocab.txt"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def length_bucket(length: int, buckets: Sequence[int] = LENGTH_BUCKETS, max_length: int | None = None) -> int:
    """The smallest bucket >= `length` (capped at `max_length`): padded shapes come from a few sizes only,
    so a jitted model compiles once per bucket."""
    cap = max_length if max_length is not None else buckets[-1]
    for b in buckets:
        if b >= length:
            return min(b, cap)
    return cap


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, buckets: Sequence[int] = LENGTH_BUCKETS,
                 pad_to: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Token ids and attention masks of `texts`, padded to a length bucket.

    Args:
        tokenizer: a `transformers` tokenizer.
        texts: `[N]` strings.
        max_length: texts are truncated to this many tokens ([CLS] and [SEP] included).
        buckets: padded lengths; the batch is padded to the smallest one that holds its longest text.
        pad_to: pad to exactly this length instead (>= the longest text after truncation).

    Returns:
        `({"input_ids": int32 [N, Lb], "attention_mask": int32 [N, Lb]}, truncated)`: `truncated` counts
        the texts that lost tokens to `max_length`.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    full = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    lengths = np.array([len(ids) for ids in full], np.int64)
    truncated = int((lengths > max_length).sum())
    longest = int(min(lengths.max(initial=2), max_length))
    width = length_bucket(longest, buckets, max_length) if pad_to is None else int(pad_to)
    if width < longest:
        raise ValueError(f"pad_to = {pad_to} is shorter than the longest text ({longest} tokens)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(full), width), pad, np.int32)
    mask = np.zeros((len(full), width), np.int32)
    sep = tokenizer.sep_token_id
    for i, row in enumerate(full):
        if len(row) > max_length:  # keep [CLS] and the first tokens, end with [SEP]
            row = row[: max_length - 1] + ([sep] if sep is not None else row[max_length - 1: max_length])
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}, truncated
