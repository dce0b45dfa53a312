"""Jitted sentiment analysis of raw texts: `SentimentAnalyzer(...).analyze(texts)`.

    analyzer = SentimentAnalyzer(model, params, tokenizer, labels="finbert", max_length=64)
    out = analyzer.analyze(["$AAPL beats estimates", "Fed hikes rates again"])
    out["label"], out["probs"], out["score"], out["confidence"]

Texts are tokenised on the host (`trading_jax.data.text.encode_texts`), padded to a length bucket
(16, 32, 64, ... up to `max_length`) and to a batch bucket, and run through one jitted function per
`(batch bucket, length bucket)` pair, so a stream of requests compiles a handful of programs, never one per
call. Padding rows are dropped from the outputs. `score` = P(bullish) - P(bearish) in [-1, 1] (by the
classes' meaning in the label scheme), the input of `trading_jax.features.sentiment.aggregate_sentiment`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.data.text import LABEL_SCHEMES, LENGTH_BUCKETS, MEANINGS, clean_text, encode_texts
from trading_jax.models.precision import cast_floating

__all__ = ["SentimentAnalyzer", "BATCH_BUCKETS"]

BATCH_BUCKETS = (1, 8, 32, 128)


class SentimentAnalyzer:
    """A sentiment model, its params and its tokenizer, for batched jitted inference.

    Args:
        model: the Flax module (e.g. `create("sentiment_bert", ...)` or `create("bert_classifier", ...)`):
            `model.apply({"params": p}, {"input_ids", "attention_mask"}, train=False)` returns "logits"
            `[B, 3]` and optionally "confidence" and "price_impact" `[B]`.
        params: its params.
        tokenizer: a `transformers` tokenizer (`trading_jax.data.text.load_tokenizer`).
        labels: the label scheme of the model's classes (`trading_jax.data.text.LABEL_SCHEMES`).
        max_length: texts are truncated to this many tokens.
        strip_urls: replace links as the training did (`trading_jax.data.text.clean_text`).
        dtype: "float32" or "bfloat16" compute.
        heads: the outputs to report besides the class probabilities: heads a run did not train (e.g.
            "price_impact" without price targets) are left out rather than reported as if meaningful.
        batch_buckets, length_buckets: padded batch sizes and lengths.
    """

    def __init__(self, model, params, tokenizer, labels: str, max_length: int = 64, strip_urls: bool = True,
                 dtype: str = "float32", heads: Sequence[str] = ("confidence",),
                 batch_buckets: Sequence[int] = BATCH_BUCKETS, length_buckets: Sequence[int] = LENGTH_BUCKETS):
        if labels not in LABEL_SCHEMES:
            raise ValueError(f"unknown label scheme {labels!r}; known: {', '.join(LABEL_SCHEMES)}")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        vocab = getattr(model, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:  # larger ids would be clamped to the last row, silently
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab}: they "
                             "do not belong together")
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.classes = LABEL_SCHEMES[labels]
        self.max_length, self.strip_urls, self.heads = int(max_length), strip_urls, tuple(heads)
        self.batch_buckets, self.length_buckets = tuple(sorted(batch_buckets)), tuple(sorted(length_buckets))
        compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        self.params = cast_floating(params, compute)
        meaning = [MEANINGS[c] for c in self.classes]
        self._bull, self._bear = meaning.index("bullish"), meaning.index("bearish")
        self.compiled: set[tuple[int, int]] = set()

        def forward(p, ids, mask):
            out = model.apply({"params": p}, {"input_ids": ids, "attention_mask": mask}, train=False)
            return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}

        self._forward = jax.jit(forward)

    def _batch_bucket(self, n: int) -> int:
        return next((b for b in self.batch_buckets if b >= n), self.batch_buckets[-1])

    def analyze(self, texts: Sequence[str]) -> dict[str, Any]:
        """Class probabilities, label, score and the trained heads of every text.

        Args:
            texts: `[N]` strings (N >= 0); a batch larger than the largest bucket is run in chunks.

        Returns:
            `{"label": [N] class names, "class_id": int32 [N], "probs": float32 [N, 3], "score": float32 [N]
            (P(bullish) - P(bearish)), **heads}` with each of `heads` a float32 `[N]`; "confidence" falls back
            to the top class probability when the model has no confidence head.
        """
        if isinstance(texts, str):
            raise ValueError("analyze takes a list of texts, not one string: analyze([text])")
        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
        empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
        if empty is not None:
            raise ValueError(f"texts[{empty}] is empty: a model cannot score it; drop it before analyze")
        chunks = []
        step = self.batch_buckets[-1]
        for start in range(0, len(texts), step):
            part = [clean_text(t, self.strip_urls) for t in texts[start:start + step]]
            enc, _ = encode_texts(self.tokenizer, part, self.max_length, self.length_buckets)
            n, width = enc["input_ids"].shape
            rows = self._batch_bucket(n)
            ids = np.zeros((rows, width), np.int32)
            mask = np.zeros((rows, width), np.int32)
            ids[:n], mask[:n] = enc["input_ids"], enc["attention_mask"]
            ids[n:, 0], mask[n:, 0] = enc["input_ids"][0, 0], 1  # padding rows: one real token, then dropped
            self.compiled.add((rows, width))
            out = self._forward(self.params, ids, mask)
            chunks.append({k: np.asarray(v)[:n] for k, v in out.items()})
        if not chunks:
            empty_out = {"label": np.array([], object), "class_id": np.zeros(0, np.int32),
                         "probs": np.zeros((0, len(self.classes)), np.float32), "score": np.zeros(0, np.float32)}
            return {**empty_out, **{h: np.zeros(0, np.float32) for h in self.heads}}
        out = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        logits = out["logits"]
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1), np.float32)
        class_id = probs.argmax(-1).astype(np.int32)
        result = {"label": np.array([self.classes[i] for i in class_id], object), "class_id": class_id,
                  "probs": probs, "score": (probs[:, self._bull] - probs[:, self._bear]).astype(np.float32)}
        for head in self.heads:
            if head in out:
                result[head] = np.asarray(out[head], np.float32).reshape(len(texts))
            elif head == "confidence":
                result[head] = probs.max(-1)
            else:
                raise ValueError(f"the model has no {head!r} output (it gives {', '.join(sorted(out))})")
        return result
