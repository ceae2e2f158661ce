#!/usr/bin/env python3
"""The PyTorch / Opacus side of `dpsgd bench step` (docs/benchmarks.md):
one training step of the same models on the same MNIST-shaped synthetic
batches, non-private (torch) and DP (Opacus), median of 20 steps after 3
warm-up steps, one JSON object per line like `dpsgd bench step --json`.

    pip install torch==2.* opacus==1.6.*
    OMP_NUM_THREADS=2 python3 benches/reference/torch_step.py --model mlp --batch-sizes 64,256,1024,4096

Run it interleaved with `dpsgd bench step --model mlp --batch-sizes ...`
on the same quiet machine, and compare ratios measured in one sitting.
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


def bench(make, n, mode, device):
    torch.manual_seed(1)
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

    return timed(step, device)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--batch-sizes", default="256")
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
    make = {"mlp": mlp, "cnn": cnn}[a.model]
    for n in (int(b) for b in a.batch_sizes.split(",")):
        out = {"model": a.model, "batch_size": n, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "tf32": (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
               if device.type == "cuda" else False,
               "torch_ms": bench(make, n, "torch", device)}
        for mode in (m for m in a.modes.split(",") if m and m != "torch"):
            out[f"opacus_{mode}_ms"] = bench(make, n, mode, device)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
