"""Benchmark: one supervised training step of our Flax models against the same architectures in PyTorch.

Models (built with `trading_jax.models.create(name, preset="seed", dropout=0.0)`, seed architectures
unchanged; only batch and sequence length are chosen so that one CPU step takes well under a second):

  transformer     "price_transformer": 128 input features -> 512, sinusoidal positions, 6 post-LN encoder
                  layers (8 heads, FF 2048, ReLU), 4 horizon heads Dense(256)-ReLU-Dense(3) on the last step.
                  Loss: MSE on "horizons" [batch, 4, 3].
  lstm_attention  seed 002: 10 features, 3 bidirectional LSTM layers of 256 units with residual connections
                  between equal-width layers, additive attention pooling, Dense(1). Loss: MSE on "prediction".
  tcn             seed 002: 10 features, 8 causal dilated residual blocks (64 channels, kernel 3, dilations
                  1..128, LayerNorm + ReLU), 1x1 downsample on block 0, Dense(1) on the last step.
                  Loss: MSE on "prediction".

One training step = forward + MSE loss + backward + AdamW update (lr 1e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01), same batch and sequence length on both sides, float32 on CPU.

  ours     one `jax.jit` step function (params and optimizer state donated), AOT-compiled first
           (compile time reported), optax.adamw.
  PyTorch  the same architecture written below with torch.nn (nn.TransformerEncoderLayer, nn.LSTM,
           nn.Conv1d), `model.train()`, `optimizer.zero_grad(set_to_none=True)`, `loss.backward()`,
           `optimizer.step()` with torch.optim.AdamW (the fastest of its CPU implementations, see
           --torch-adamw). torch is imported lazily: it is not a dependency of the project.

Dropout is set to 0 on both sides (the seeds use 0.1 / 0.2) so that the work is identical: no random
masks are drawn by either side. Both sides are in training mode.

Equivalence: before timing, our parameters are copied into the PyTorch model and both forward passes are
compared on the same batch (max abs difference reported), and the trainable parameter counts are asserted
equal. PyTorch's nn.LSTM keeps two gate biases (b_ih, b_hh) where ours keeps one: b_hh is frozen at zero
(requires_grad=False, not given to the optimiser), so the trainable parameters are the same. LayerNorm eps
is 1e-6 on both sides (Flax's default). Initialisation is irrelevant to timing and not matched.

Threads: torch.set_num_threads(os.cpu_count()); XLA:CPU runs with its default intra-op pool, one thread
per core (os.cpu_count()). Timing: after a warm-up, `--rounds` rounds alternate `--steps` of ours and
`--steps` of PyTorch (so that load from elsewhere on the machine hits both sides alike); each step is timed
individually (ours until the new params, optimizer state and loss are ready) and the median over all
timed steps is reported. samples/s = batch / median step time.

GPU (`jax.default_backend() == "gpu"`): our models in bfloat16 compute (float32 params), the transformer
at batch 64, sequence 500; samples/s and model FLOP utilisation

    MFU = model FLOPs per step / step time / peak bf16 FLOP/s of the device,

with the transformer's model FLOPs counted analytically (`transformer_train_flops`, matmuls only, the
PaLM convention; XLA's own cost analysis is reported beside it). PyTorch runs on the GPU too only when
it has CUDA (the CPU wheel does not); otherwise the peer is reported as absent.

torch is optional (`pip install torch==2.13.0`, the CPU wheel): without it the peer is skipped with a
note in the JSON and the summary line. Writes benchmarks/results/train_step-DEVICE.json
(train_step-DEVICE-quick.json with --quick) and ends with one summary line.

    python benchmarks/train_step.py                  # CPU sizes below
    python benchmarks/train_step.py --steps 5 --rounds 2 --models tcn
    python benchmarks/train_step.py --quick          # 2 timed steps per side, 1 round, AdamW foreach
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trading_jax.models import create

from _common import add_common_arguments, device_name, machine_info, output_path, skip_note, write_results

ROOT = Path(__file__).resolve().parents[1]

LR, BETAS, EPS, WEIGHT_DECAY = 1e-4, (0.9, 0.999), 1e-8, 0.01


@dataclass(frozen=True)
class Case:
    key: str            # short name in the output
    model: str          # registry name
    features: int       # input features F
    batch: int
    seq: int
    output: str         # output key the loss reads
    target_shape: tuple  # target shape without the batch axis


# CPU sizes: seed architectures, batch/sequence chosen so one PyTorch step takes about a second or less on
# the 2-core CPU this was written on (the seed transformer is 19.5M parameters, ~7 GFLOP per sample and
# training step at 60 bars, hence its small batch). The transformer and the LSTM use the seeds' 60-bar
# window; the TCN, whose receptive field is 1021 bars, gets 128 bars.
CPU_CASES = (
    Case("transformer", "price_transformer", 128, 8, 60, "horizons", (4, 3)),
    Case("lstm_attention", "lstm_attention", 10, 16, 60, "prediction", (1,)),
    Case("tcn", "tcn", 10, 32, 128, "prediction", (1,)),
)
GPU_CASES = (
    Case("transformer", "price_transformer", 128, 64, 500, "horizons", (4, 3)),
    Case("lstm_attention", "lstm_attention", 10, 64, 60, "prediction", (1,)),
    Case("tcn", "tcn", 10, 64, 500, "prediction", (1,)),
)

# Dense bf16 peak FLOP/s by device kind (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS = {
    "h100 80gb hbm3": 989.4e12,  # H100 SXM
    "h100 sxm": 989.4e12,
    "h100 pcie": 756.0e12,
    "h100 nvl": 835.0e12,
    "h200": 989.4e12,
    "a100": 312.0e12,
    "l4": 121.0e12,
}


# ------------------------------------------------------------------------------------------------
# FLOP count of the transformer (GPU utilisation)
# ------------------------------------------------------------------------------------------------


def transformer_train_flops(batch: int, seq: int, features: int, d_model: int, num_layers: int,
                            dim_feedforward: int, n_horizons: int) -> float:
    """Model FLOPs of one training step of `PricePredictionTransformer` (matmuls only, 1 MAC = 2 FLOPs).

    Forward, per sample (T = seq, F = features, d = d_model, f = dim_feedforward, L = num_layers,
    H = horizons):

        input projection          2 T F d
        per layer: Q, K, V, out   4 * 2 T d^2
                   Q K^T, A V     2 * 2 T^2 d         (full T x T: the seed attends without a mask)
                   feed-forward   2 * 2 T d f
        heads (last step only)    H (2 d (d/2) + 2 (d/2) 3)

    A training step counts 3x the forward (backward = 2x forward: gradients with respect to both the
    activations and the weights), times the batch. LayerNorm, softmax, activations and the AdamW update
    are not counted (the PaLM / Megatron MFU convention), so MFU understates the work actually done.
    Checked on CPU against XLA's cost analysis of the compiled float32 step at batch 16, sequence 60:
    1.1127e11 here against 1.1173e11 from XLA (0.4 % more: the element-wise work).
    """
    t, f_in, d, f, L = seq, features, d_model, dim_feedforward, num_layers
    per_layer = 8 * t * d * d + 4 * t * t * d + 4 * t * d * f
    forward = 2 * t * f_in * d + L * per_layer + n_horizons * (d * d + 3 * d)
    return 3.0 * forward * batch


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "").lower()
    for name, value in PEAK_BF16_FLOPS.items():
        if name in kind:
            return value
    return None


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------


def build_ours(case: Case, dtype=None):
    cfg = dict(dropout=0.0)
    if dtype is not None:
        cfg["dtype"] = dtype
    model = create(case.model, preset="seed", **cfg)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((case.batch, case.seq, case.features)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((case.batch, *case.target_shape)), jnp.float32)
    params = model.init(jax.random.key(0), x[:1])["params"]
    tx = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY)

    def loss_fn(p, xb, yb):
        out = model.apply({"params": p}, xb, train=True)  # dropout 0: no rng drawn
        return jnp.mean((out[case.output].astype(jnp.float32) - yb) ** 2)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(p, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return model, params, tx, step, x, y


def param_count(params) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


class OursRunner:
    def __init__(self, case: Case, dtype=None):
        self.model, params, tx, step, self.x, self.y = build_ours(case, dtype)
        self.n_params = param_count(params)
        self.params_for_copy = jax.tree.map(np.asarray, params)  # before donation
        opt_state = tx.init(params)
        start = time.perf_counter()
        lowered = step.lower(params, opt_state, self.x, self.y)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - start
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        self.state = (params, opt_state)

    def step(self) -> float:
        start = time.perf_counter()
        params, opt_state, loss = self.compiled(*self.state, self.x, self.y)
        jax.block_until_ready((params, opt_state, loss))
        seconds = time.perf_counter() - start
        self.state = (params, opt_state)
        self.last_loss = float(loss)
        return seconds

    def forward(self, params) -> np.ndarray:
        out = self.model.apply({"params": params}, self.x, train=False)
        return np.asarray(out[CASE_OUTPUT[self.model.__class__.__name__]], np.float32)


CASE_OUTPUT = {"PricePredictionTransformer": "horizons", "LSTMAttentionModel": "prediction", "TCN": "prediction"}


# ------------------------------------------------------------------------------------------------
# PyTorch peers (same architectures)
# ------------------------------------------------------------------------------------------------


def torch_models():
    """The PyTorch classes, defined on first use so that importing this file does not need torch."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class PriceTransformer(nn.Module):
        """Seed 000 in PyTorch: Linear(F, d) + sinusoid, nn.TransformerEncoder (post-LN, ReLU), H heads."""

        def __init__(self, features, d_model=512, num_heads=8, num_layers=6, dim_feedforward=2048,
                     horizons=4, max_seq_length=1000):
            super().__init__()
            self.input_projection = nn.Linear(features, d_model)
            layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout=0.0, activation="relu",
                                               layer_norm_eps=1e-6, batch_first=True, norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(d_model, d_model // 2), nn.ReLU(), nn.Dropout(0.0), nn.Linear(d_model // 2, 3))
                for _ in range(horizons))
            position = torch.arange(max_seq_length, dtype=torch.float64)[:, None]
            freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_seq_length, d_model, dtype=torch.float64)
            pe[:, 0::2] = torch.sin(position * freq)
            pe[:, 1::2] = torch.cos(position * freq)
            self.register_buffer("pe", pe.float())

        def forward(self, x):
            h = self.input_projection(x) + self.pe[: x.shape[1]]
            h = self.encoder(h)
            last = h[:, -1]
            return torch.stack([head(last) for head in self.heads], dim=1)

    class LSTMAttention(nn.Module):
        """Seed 002's LSTM-attention in PyTorch: one bidirectional nn.LSTM per layer (residual between
        equal-width layers), additive attention pooling, Linear(2H, 1). b_hh frozen at zero."""

        def __init__(self, features, hidden=256, num_layers=3):
            super().__init__()
            self.layers = nn.ModuleList(
                nn.LSTM(features if i == 0 else 2 * hidden, hidden, batch_first=True, bidirectional=True)
                for i in range(num_layers))
            for lstm in self.layers:
                for name, p in lstm.named_parameters():
                    if name.startswith("bias_hh"):
                        nn.init.zeros_(p)
                        p.requires_grad_(False)
            self.query = nn.Linear(2 * hidden, 2 * hidden)
            self.score = nn.Linear(2 * hidden, 1, bias=False)
            self.head = nn.Linear(2 * hidden, 1)

        def forward(self, x):
            for lstm in self.layers:
                y, _ = lstm(x)
                x = y + x if y.shape[-1] == x.shape[-1] else y
            scores = self.score(torch.tanh(self.query(x))).squeeze(-1)
            weights = torch.softmax(scores, dim=-1)
            context = torch.einsum("bt,btd->bd", weights, x)
            return self.head(context)

    class TemporalBlock(nn.Module):
        def __init__(self, cin, cout, kernel, dilation):
            super().__init__()
            self.pad = (kernel - 1) * dilation
            self.conv0 = nn.Conv1d(cin, cout, kernel, dilation=dilation)
            self.norm0 = nn.LayerNorm(cout, eps=1e-6)
            self.conv1 = nn.Conv1d(cout, cout, kernel, dilation=dilation)
            self.norm1 = nn.LayerNorm(cout, eps=1e-6)
            self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None

        def forward(self, x):  # [B, C, T]
            h = x
            for conv, norm in ((self.conv0, self.norm0), (self.conv1, self.norm1)):
                h = conv(F.pad(h, (self.pad, 0)))
                h = torch.relu(norm(h.transpose(1, 2)).transpose(1, 2))
            residual = x if self.downsample is None else self.downsample(x)
            return torch.relu(h + residual)

    class TCN(nn.Module):
        """Seed 002's TCN in PyTorch: Conv1d on [B, C, T], LayerNorm over channels, head on the last step."""

        def __init__(self, features, channels=64, levels=8, kernel=3):
            super().__init__()
            self.blocks = nn.ModuleList(
                TemporalBlock(features if i == 0 else channels, channels, kernel, 2**i) for i in range(levels))
            self.head = nn.Linear(channels, 1)

        def forward(self, x):  # [B, T, F]
            h = x.transpose(1, 2)
            for block in self.blocks:
                h = block(h)
            return self.head(h[:, :, -1])

    return {"transformer": PriceTransformer, "lstm_attention": LSTMAttention, "tcn": TCN}


def copy_into_torch(key: str, model, params) -> None:
    """Load our (numpy) params into the PyTorch model, layer by layer."""
    import torch

    def put(dst, value):
        value = torch.from_numpy(np.ascontiguousarray(value, np.float32))
        assert dst.shape == value.shape, (dst.shape, value.shape)
        with torch.no_grad():
            dst.copy_(value)

    def dense(dst, p):  # flax Dense kernel [in, out] -> torch Linear weight [out, in]
        put(dst.weight, p["kernel"].T)
        if dst.bias is not None:
            put(dst.bias, p["bias"])

    if key == "transformer":
        enc = params["encoder"]
        dense(model.input_projection, enc["input_projection"])
        for i, layer in enumerate(model.encoder.layers):
            p = enc[f"layer_{i}"]
            att = p["attention"]
            put(layer.self_attn.in_proj_weight, np.concatenate([att[n]["kernel"].T for n in ("query", "key", "value")]))
            put(layer.self_attn.in_proj_bias, np.concatenate([att[n]["bias"] for n in ("query", "key", "value")]))
            dense(layer.self_attn.out_proj, att["out"])
            dense(layer.linear1, p["ff_in"])
            dense(layer.linear2, p["ff_out"])
            for norm, name in ((layer.norm1, "norm1"), (layer.norm2, "norm2")):
                put(norm.weight, p[name]["scale"])
                put(norm.bias, p[name]["bias"])
        for i, head in enumerate(model.heads):
            dense(head[0], params[f"head_{i}_hidden"])
            dense(head[3], params[f"head_{i}_out"])
    elif key == "lstm_attention":
        for i, lstm in enumerate(model.layers):
            for suffix, direction in (("", "forward"), ("_reverse", "backward")):
                p = params["lstm"][f"layer_{i}"][direction]
                put(getattr(lstm, f"weight_ih_l0{suffix}"), p["input_kernel"].T)
                put(getattr(lstm, f"weight_hh_l0{suffix}"), p["recurrent_kernel"].T)
                put(getattr(lstm, f"bias_ih_l0{suffix}"), p["bias"])
        dense(model.query, params["attention"]["query"])
        dense(model.score, params["attention"]["score"])
        dense(model.head, params["head"])
    elif key == "tcn":
        for i, block in enumerate(model.blocks):
            p = params[f"block{i}"]
            for j in range(2):
                conv = getattr(block, f"conv{j}")
                put(conv.weight, p[f"conv{j}"]["kernel"].transpose(2, 1, 0))  # [k, in, out] -> [out, in, k]
                put(conv.bias, p[f"conv{j}"]["bias"])
                norm = getattr(block, f"norm{j}")
                put(norm.weight, p[f"norm{j}"]["scale"])
                put(norm.bias, p[f"norm{j}"]["bias"])
            if block.downsample is not None:
                put(block.downsample.weight, p["downsample"]["kernel"].T[:, :, None])
                put(block.downsample.bias, p["downsample"]["bias"])
        dense(model.head, params["head"])
    else:
        raise KeyError(key)


class TorchRunner:
    def __init__(self, case: Case, x: np.ndarray, y: np.ndarray, adamw: str, device: str = "cpu",
                 bf16: bool = False):
        import torch

        self.torch = torch
        self.device = device
        self.bf16 = bf16  # autocast to bfloat16 (GPU branch), params stay float32 as ours
        self.model = torch_models()[case.key](case.features).to(device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.n_params = int(sum(p.numel() for p in self.trainable))
        self.x = torch.from_numpy(np.array(x)).to(device)
        self.y = torch.from_numpy(np.array(y)).to(device)
        kwargs = {"foreach": False, "fused": False}
        if adamw == "foreach":
            kwargs = {"foreach": True}
        elif adamw == "fused":
            kwargs = {"fused": True}
        self.adamw = adamw
        self.optimizer = torch.optim.AdamW(self.trainable, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                                           **kwargs)
        self.model.train()

    def forward(self) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.x).float().cpu().numpy()

    def step(self) -> float:
        torch = self.torch
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(self.x)
        loss = torch.nn.functional.mse_loss(out.float(), self.y)
        loss.backward()
        self.optimizer.step()
        if self.device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.last_loss = float(loss.detach())
        return seconds


def pick_adamw(case: Case, x, y, params, steps: int = 3) -> tuple[str, dict]:
    """The fastest torch.optim.AdamW implementation on this machine for this model (median of `steps`)."""
    timings = {}
    for impl in ("for-loop", "foreach", "fused"):
        try:
            runner = TorchRunner(case, x, y, impl)
            copy_into_torch(case.key, runner.model, params)
            runner.step()
            timings[impl] = statistics.median(runner.step() for _ in range(steps))
        except (RuntimeError, ValueError) as error:  # an implementation this build lacks
            timings[impl] = f"unavailable: {error}"
    numeric = {k: v for k, v in timings.items() if isinstance(v, float)}
    return min(numeric, key=numeric.get), timings


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------


def bench_case(case: Case, steps: int, rounds: int, warmup: int, adamw: str | None, torch_device: str | None,
               dtype=None) -> dict:
    print(f"{case.key}: batch {case.batch}, sequence {case.seq}, {case.features} features", flush=True)
    ours = OursRunner(case, dtype)
    result = {"model": case.model, "preset": "seed", "batch": case.batch, "sequence": case.seq,
              "features": case.features, "loss_on": case.output, "params": ours.n_params,
              "ours": {"compile_s": ours.compile_s, "xla_cost_analysis_flops": ours.xla_flops}}
    peer = None
    if torch_device is not None:
        if adamw is None and torch_device != "cpu":
            adamw = "fused"
        elif adamw is None:
            adamw, tried = pick_adamw(case, ours.x, ours.y, ours.params_for_copy)
            result["torch_adamw_tried_s"] = tried
        peer = TorchRunner(case, ours.x, ours.y, adamw, torch_device, bf16=dtype is not None)
        assert peer.n_params == ours.n_params, f"{case.key}: PyTorch {peer.n_params} params, ours {ours.n_params}"
        copy_into_torch(case.key, peer.model, ours.params_for_copy)
        if dtype is None:
            ref = ours.forward(ours.params_for_copy)
            diff = float(np.max(np.abs(peer.forward() - ref)))
            scale = float(np.max(np.abs(ref)))
            print(f"  same architecture: {ours.n_params:,} trainable params each side; forward max |diff| "
                  f"{diff:.2e} (outputs up to {scale:.2e})", flush=True)
            assert diff <= 1e-3 * max(scale, 1.0), f"{case.key}: forward outputs differ by {diff}"
            result["forward_max_abs_diff"] = diff
        result["peer"] = {"torch_adamw": adamw}
        start = time.perf_counter()
        peer.step()
        result["peer"]["first_step_s"] = time.perf_counter() - start

    ours_times, peer_times = [], []
    for _ in range(warmup):
        ours.step()
        if peer is not None:
            peer.step()
    for _ in range(rounds):
        ours.step()  # untimed: re-warm caches after the other side ran
        ours_times += [ours.step() for _ in range(steps)]
        if peer is not None:
            peer.step()
            peer_times += [peer.step() for _ in range(steps)]

    ours_s = statistics.median(ours_times)
    result["ours"].update(median_step_ms=1e3 * ours_s, samples_per_s=case.batch / ours_s,
                          step_ms=[round(1e3 * t, 3) for t in ours_times], final_loss=ours.last_loss)
    line = f"  ours {1e3 * ours_s:.1f} ms/step = {case.batch / ours_s:,.1f} samples/s (compile {ours.compile_s:.1f} s)"
    if peer is not None:
        peer_s = statistics.median(peer_times)
        result["peer"].update(median_step_ms=1e3 * peer_s, samples_per_s=case.batch / peer_s,
                              step_ms=[round(1e3 * t, 3) for t in peer_times], final_loss=peer.last_loss)
        result["ratio"] = peer_s / ours_s
        result["ratio_of_fastest_steps"] = min(peer_times) / min(ours_times)
        line += (f"; PyTorch {1e3 * peer_s:.1f} ms/step = {case.batch / peer_s:,.1f} samples/s -> ratio "
                 f"{result['ratio']:.2f} (fastest steps: ours {1e3 * min(ours_times):.1f} ms, PyTorch "
                 f"{1e3 * min(peer_times):.1f} ms, ratio {result['ratio_of_fastest_steps']:.2f})")
        threads = peer.torch.get_num_threads()
        if torch_device == "cpu" and threads > 1:
            # Control: PyTorch on one thread. OpenMP's barrier waits make multi-threaded PyTorch collapse
            # when another process takes a core; this shows whether that happened during the run.
            peer.torch.set_num_threads(1)
            peer.step()
            one = statistics.median(peer.step() for _ in range(steps))
            peer.torch.set_num_threads(threads)
            result["peer"]["one_thread_median_step_ms"] = 1e3 * one
            line += f"; PyTorch on 1 thread {1e3 * one:.1f} ms/step"
    print(line, flush=True)
    return result


def machine() -> dict:
    return {**machine_info("optax", "flax"),
            "load_note": ("os.getloadavg() before/after: other processes on the machine share the cores; "
                          "multi-threaded PyTorch (OpenMP) degrades far more than XLA under such load, see "
                          "each model's peer.one_thread_median_step_ms and ratio_of_fastest_steps")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[c.key for c in CPU_CASES])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side per round (default 5; quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds alternating ours / PyTorch (default 3; quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per side after compiling (default 2; quick 1)")
    parser.add_argument("--torch-adamw", choices=("for-loop", "foreach", "fused"), default=None,
                        help="PyTorch AdamW implementation (default: the fastest of the three, timed per model)")
    parser.add_argument("--batch", type=int, default=None, help="override every model's batch")
    parser.add_argument("--seq", type=int, default=None, help="override every model's sequence length")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak, if the table lacks the device")
    add_common_arguments(parser)
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = args.warmup or (1 if args.quick else 2)
    adamw = args.torch_adamw or ("foreach" if args.quick else None)  # quick: no timing of the three AdamWs

    gpu = jax.default_backend() == "gpu"
    cases = [c for c in (GPU_CASES if gpu else CPU_CASES) if c.key in args.models]
    if args.batch or args.seq:
        cases = [Case(c.key, c.model, c.features, args.batch or c.batch, args.seq or c.seq, c.output, c.target_shape)
                 for c in cases]

    torch_device, skipped = None, {}
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        torch_device = "cpu"
        if gpu:
            torch_device = "cuda" if torch.cuda.is_available() else None
            if torch_device is None:
                skipped["torch"] = "PyTorch skipped: this torch build has no CUDA (a CUDA build of torch is needed on a GPU)"
    except ImportError:
        skipped["torch"] = skip_note("PyTorch", "torch==2.13.0", "torch")
    for note in skipped.values():
        print(note, flush=True)

    results = {
        "benchmark": "train_step", "quick": args.quick, "machine": machine(), "skipped": skipped,
        "goal": {"ratio_vs_pytorch_cpu": 1.5, "gpu_mfu_transformer_bf16": 0.40},
        "settings": {"dtype": "bfloat16 compute, float32 params" if gpu else "float32", "dropout": 0.0,
                     "optimizer": f"AdamW lr {LR}, betas {BETAS}, eps {EPS}, weight decay {WEIGHT_DECAY}",
                     "loss": "MSE", "timed_steps_per_side": steps * rounds, "rounds": rounds,
                     "statistic": "median step time; samples/s = batch / median"},
        "notes": ("Seed architectures (create(name, preset='seed', dropout=0.0)); dropout 0 on both sides so the "
                  "work is identical. Ours: one jax.jit step (params/opt state donated), optax.adamw. PyTorch: "
                  "same architecture in torch.nn, model.train(), zero_grad(set_to_none=True), backward, "
                  "AdamW.step(), in the same process and run, rounds alternating sides. Parameter counts "
                  "asserted equal; forward outputs compared after copying our weights into PyTorch. "
                  "nn.LSTM's second gate bias b_hh is frozen at zero (ours has one bias)."),
        "models": {},
    }
    if gpu:
        results["settings"]["peak_bf16_flops"] = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(jax.devices()[0])

    results["machine"]["load_average_before"] = os.getloadavg()
    for case in cases:
        r = bench_case(case, steps, rounds, warmup, adamw, torch_device, dtype=jnp.bfloat16 if gpu else None)
        if gpu and case.key == "transformer":
            flops = transformer_train_flops(case.batch, case.seq, case.features, 512, 6, 2048, 4)
            peak = results["settings"]["peak_bf16_flops"]
            step_s = r["ours"]["median_step_ms"] / 1e3
            r["ours"]["model_flops_per_step"] = flops
            r["ours"]["achieved_tflops"] = flops / step_s / 1e12
            r["ours"]["mfu"] = flops / step_s / peak if peak else None
            mfu = f"{100 * r['ours']['mfu']:.1f}%" if peak else "n/a (unknown peak: --peak-tflops)"
            print(f"  model FLOPs/step {flops:.3e} (XLA cost analysis {r['ours']['xla_cost_analysis_flops']:.3e}), "
                  f"{flops / step_s / 1e12:.1f} TFLOP/s, MFU {mfu}", flush=True)
        results["models"][case.key] = r

    results["machine"]["load_average_after"] = os.getloadavg()
    ratios = {k: r["ratio"] for k, r in results["models"].items() if "ratio" in r}
    if ratios:
        results["geomean_ratio"] = math.exp(sum(math.log(v) for v in ratios.values()) / len(ratios))
        results["worst"] = min(ratios, key=ratios.get)

    write_results(output_path("train_step", args), results)

    models = results["models"]
    if gpu and "transformer" in models:
        t = models["transformer"]
        mfu = t["ours"].get("mfu")
        why = "no CUDA torch" if "CUDA" in skipped.get("torch", "CUDA") else "not installed"
        peer = f"PyTorch {t['peer']['samples_per_s']:,.0f} samples/s, ratio {t['ratio']:.2f}" if "peer" in t else \
            f"PyTorch skipped ({why}), ratio n/a"
        print(f"train_step (transformer bf16, batch {t['batch']}, seq {t['sequence']}): ours "
              f"{t['ours']['samples_per_s']:,.0f} samples/s, {peer}; MFU "
              f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} (goal MFU 40%)")
    elif ratios:
        for key, ratio in ratios.items():
            m = models[key]
            print(f"train_step[{key}]: ours {m['ours']['samples_per_s']:,.1f} samples/s, "
                  f"PyTorch {m['peer']['samples_per_s']:,.1f} samples/s, ratio {ratio:.2f} (goal 1.5)")
        worst = results["worst"]
        fastest = {k: r["ratio_of_fastest_steps"] for k, r in models.items() if "ratio" in r}
        print(f"train_step: geometric mean ratio over {len(ratios)} models {results['geomean_ratio']:.2f}; "
              f"worst model {worst}; ratios of the fastest steps "
              + ", ".join(f"{k} {v:.2f}" for k, v in fastest.items()))
        print(f"train_step (worst model, {worst}): ours {models[worst]['ours']['samples_per_s']:,.1f} samples/s, "
              f"PyTorch {models[worst]['peer']['samples_per_s']:,.1f} samples/s, ratio {ratios[worst]:.2f} (goal 1.5)")
    else:
        ours = ", ".join(f"{k} {m['ours']['samples_per_s']:,.1f}" for k, m in models.items())
        print(f"train_step: ours {ours} samples/s, PyTorch skipped ({'not installed' if 'torch' in skipped else 'not run'}), "
              f"ratio n/a (goal 1.5)")


if __name__ == "__main__":
    main()
