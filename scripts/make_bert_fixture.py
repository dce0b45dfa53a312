"""Write the tiny Hugging Face BERT checkpoint of tests/fixtures/tiny_bert/ and its reference outputs.

A random `transformers.BertForSequenceClassification` shaped like ProsusAI/finbert in miniature (3 labels,
``id2label`` positive / negative / neutral) with deliberately awkward sizes: hidden 32, 2 layers, 4 heads,
intermediate 37 (odd), vocab 120, 64 positions, 2 token types, ``layer_norm_eps=1e-7`` (not HF's default).
Its weights are redrawn with unit-scale statistics (HF's 0.02 init would give near-constant logits, too
weak a parity check: an approximate GELU or a missing mask would hide under 1e-5).

Writes into OUT (default ``tests/fixtures/tiny_bert``):
    config.json, model.safetensors   ``save_pretrained``
    pytorch_model.bin                ``torch.save(state_dict)`` (the legacy format, same tensors)
    vocab.txt                        [PAD] [UNK] [CLS] [SEP] [MASK], then words and ##pieces (120 lines)
    reference.npz                    inputs (batch 3, length 11: padding in rows 1 and 2, a sentence pair
                                     with token_type_ids 1 in row 2) and the eval-mode outputs in float32:
                                     logits [3, 3], last_hidden_state [3, 11, 32], pooled [3, 32]

Needs torch and transformers; runs offline and is deterministic (fixed seeds, fixed zip timestamps).

    python scripts/make_bert_fixture.py [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import math
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tiny_bert"

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """the a of to in and on for is up down rate rates bank banks stock stocks market markets price
prices share shares bond bonds yield profit loss gain gains sales revenue growth earnings guidance quarter
year fed cut hike inflation oil gold dollar euro buy sell beat miss strong weak record low high rise fall
rally crash deal merger debt cash risk fund funds trade trader volume margin outlook forecast dividend
tax job jobs data report""".split()
PIECES = [f"##{s}" for s in "s ed ing er est ly al ion ive ity ment ness able ful".split()]


def vocabulary(size: int) -> list[str]:
    """Special tokens, words, word pieces, then ``##a ##b ...`` single letters until ``size`` entries."""
    letters = [f"##{chr(ord('a') + i)}" for i in range(26)]
    tokens = list(dict.fromkeys(SPECIAL + WORDS + PIECES + letters))  # unique, in order
    if len(tokens) < size:
        raise SystemExit(f"the built-in vocabulary has {len(tokens)} tokens, need {size}")
    return tokens[:size]


def fixture_inputs() -> dict[str, np.ndarray]:
    """Batch 3, length 11: a full row, a padded row and a padded sentence pair (token types 1)."""
    rng = np.random.RandomState(0)
    cls, sep, pad = 2, 3, 0
    words = lambda n: list(rng.randint(len(SPECIAL), 120, size=n))
    rows = [
        [cls, *words(9), sep],
        [cls, *words(6), sep] + [pad] * 3,
        [cls, *words(3), sep, *words(2), sep] + [pad] * 3,
    ]
    input_ids = np.array(rows, dtype=np.int32)
    attention_mask = (np.arange(11)[None, :] < np.array([[11], [8], [8]])).astype(np.int32)
    token_type_ids = np.zeros((3, 11), dtype=np.int32)
    token_type_ids[2, 5:8] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps, so the file is byte-for-byte reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def build_model(torch, transformers):
    """The tiny classifier with its weights redrawn at unit scale (seeded)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7, hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0,
        num_labels=3, id2label={0: "positive", 1: "negative", 2: "neutral"},
        label2id={"positive": 0, "negative": 1, "neutral": 2},
    )
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(param))
            elif "embeddings" in name:
                param.normal_(0.0, 1.0)
            elif name.endswith("weight"):  # Linear [out, in]: unit-variance outputs
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[1]))
            else:
                param.normal_(0.0, 0.1)
    return model.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default %(default)s)")
    args = parser.parse_args(argv)

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(torch, transformers)
    model.save_pretrained(str(args.out), safe_serialization=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out / "pytorch_model.bin")
    (args.out / "vocab.txt").write_text("\n".join(vocabulary(model.config.vocab_size)) + "\n")

    inputs = fixture_inputs()
    with torch.no_grad():
        torch_inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
        body = model.bert(**torch_inputs)
        logits = model(**torch_inputs).logits
    reference = dict(
        inputs,
        logits=logits.numpy().astype(np.float32),
        last_hidden_state=body.last_hidden_state.numpy().astype(np.float32),
        pooled=body.pooler_output.numpy().astype(np.float32),
    )
    save_npz(args.out / "reference.npz", reference)
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"wrote {args.out}: {', '.join(sorted(f.name for f in args.out.iterdir()))} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
