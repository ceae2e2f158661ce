#!/usr/bin/env python3
"""The PyTorch / Opacus side of `dpsgd bench step` (docs/benchmarks.md):
one training step of the same models on the same shapes of synthetic
batch (MNIST-shaped images for `mlp` and `cnn`; `--seq-len` random tokens
of a 1 000-word vocabulary and 2 classes for `lstm` and `transformer`),
non-private (torch) and DP (Opacus), median of `--repeats` steps (20)
after 3 warm-up steps, one JSON object per line like `dpsgd bench step
--json`.

    pip install torch==2.* opacus==1.6.*
    OMP_NUM_THREADS=2 python3 benches/reference/torch_step.py --model mlp --batch-sizes 64,256,1024,4096
    OMP_NUM_THREADS=2 python3 benches/reference/torch_step.py --model transformer --batch-sizes 64,256

Run it interleaved with `dpsgd bench step --model mlp --batch-sizes ...`
on the same quiet machine, and compare ratios measured in one sitting;
`dpsgd bench step --compare-torch` does that, running this script (a copy
embedded in the binary) after each of its rounds.
Opacus's modes: `hooks` (per-sample gradients materialised) and `ghost`
(ghost clipping, its fastest for linear layers). `--device cuda` times the
same steps on a GPU (synchronised before each clock read), as
scripts/gpu-check does beside `dpsgd bench step --backend wgpu`; `--modes
''` times torch's own step alone (Opacus is imported only when a mode asks
for it).
"""
import argparse, json, statistics, time

import torch
import torch.nn as nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn():
    # The classic DP MNIST CNN (Papernot et al. 2021; dpsgd's `Cnn::new(28, 28, 10)`).
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


VOCAB, CLASSES, D_MODEL = 1000, 2, 128


class TextLstm(nn.Module):
    """dpsgd's `TextLstm`: token embeddings, one LSTM layer of width 128, a
    linear head on the last step's hidden state. `dp` builds Opacus's
    `DPLSTM` (the same computation, whose gates Opacus can clip per
    example) instead of torch's fused `nn.LSTM`."""

    def __init__(self, dp=False):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D_MODEL)
        if dp:
            from opacus.layers import DPLSTM
            self.lstm = DPLSTM(D_MODEL, D_MODEL, batch_first=True)
        else:
            self.lstm = nn.LSTM(D_MODEL, D_MODEL, batch_first=True)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, ids):
        _, (hidden, _) = self.lstm(self.tokens(ids))
        return self.head(hidden[-1])


class TextTransformer(nn.Module):
    """dpsgd's `TextTransformer`: token and learned position embeddings, two
    post-norm encoder blocks (d = 128, 4 heads, GELU feed-forward of 256, no
    dropout), the mean over positions, a linear head. `dp` swaps torch's
    `nn.MultiheadAttention` for Opacus's `DPMultiheadAttention` (what
    `ModuleValidator.fix` does), whose projections Opacus can clip."""

    def __init__(self, seq_len, dp=False):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D_MODEL)
        self.positions = nn.Embedding(seq_len, D_MODEL)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(D_MODEL, 4, dim_feedforward=256, dropout=0.0,
                                       activation="gelu", batch_first=True)
            for _ in range(2))
        if dp:
            from opacus.layers import DPMultiheadAttention
            for block in self.blocks:
                block.self_attn = DPMultiheadAttention(D_MODEL, 4, dropout=0.0, batch_first=True)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, ids):
        # Contiguous: Opacus's embedding ghost norm views the ids flat.
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids).contiguous()
        h = self.tokens(ids) + self.positions(positions)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


def timed(step, device, warmup=3, repeats=20):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench(make, n, mode, device, seq_len=64, repeats=20):
    torch.manual_seed(1)
    if make in (TextLstm, TextTransformer):
        x = torch.randint(0, VOCAB, (n, seq_len), device=device)
        y = torch.randint(0, CLASSES, (n,), device=device)
        dp = mode != "torch"
        model = (TextLstm(dp) if make is TextLstm else TextTransformer(seq_len, dp)).to(device)
    else:
        x = torch.rand(n, 1, 28, 28, device=device)
        y = torch.randint(0, 10, (n,), device=device)
        model = make().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    if mode != "torch":
        from opacus import PrivacyEngine
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=n)
        engine = PrivacyEngine()
        kwargs = dict(module=model, optimizer=opt, data_loader=data,
                      noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
        if mode == "ghost":
            model, opt, loss_fn, _ = engine.make_private(criterion=loss_fn, grad_sample_mode="ghost", **kwargs)
        else:
            model, opt, _ = engine.make_private(grad_sample_mode="hooks", **kwargs)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return timed(step, device, repeats=repeats)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn", "lstm", "transformer"], default="mlp")
    p.add_argument("--batch-sizes", default="256")
    p.add_argument("--seq-len", type=int, default=64,
                   help="tokens per sequence of the text models (as `dpsgd bench step --seq-len`)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps (the median is reported)")
    p.add_argument("--modes", default="hooks,ghost",
                   help="Opacus modes to time besides torch's own step (hooks materialises "
                        "per-sample gradients: slow at large batches)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda":
        # f32 as dpsgd computes it on wgpu: no TF32 in matmuls or cuDNN.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    make = {"mlp": mlp, "cnn": cnn, "lstm": TextLstm, "transformer": TextTransformer}[a.model]
    for n in (int(b) for b in a.batch_sizes.split(",")):
        out = {"model": a.model, "batch_size": n, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "tf32": (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
               if device.type == "cuda" else False,
               "torch_ms": bench(make, n, "torch", device, a.seq_len, a.repeats)}
        if make in (TextLstm, TextTransformer):
            out["seq_len"] = a.seq_len
        for mode in (m for m in a.modes.split(",") if m and m != "torch"):
            out[f"opacus_{mode}_ms"] = bench(make, n, mode, device, a.seq_len, a.repeats)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
