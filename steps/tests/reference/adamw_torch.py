"""Reference numbers for steps/tests/bert_optimizer.rs, from PyTorch.

Run: python steps/tests/reference/adamw_torch.py   (needs `pip install torch`)
Prints the parameters after three clipped AdamW updates with two parameter groups (decay on the
weight, none on the bias), as the Rust test replays them.
"""
import math

import torch

w = torch.nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64))
b = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
opt = torch.optim.AdamW(
    [{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}],
    lr=1.0, betas=(0.9, 0.999), eps=1e-6,
)
lrs = [1e-2, 2e-2, 5e-3]
for t, lr in enumerate(lrs, start=1):
    opt.zero_grad()
    gw = torch.tensor([[math.sin(t), math.cos(t)], [0.5 * t, -1.5]], dtype=torch.float64)
    gb = torch.tensor([0.2 * t, -0.7], dtype=torch.float64)
    w.grad, b.grad = gw, gb
    norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm=1.0)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    print(f"step {t}: norm={norm.item():.12f}")
print("w =", [f"{v:.12f}" for v in w.detach().flatten().tolist()])
print("b =", [f"{v:.12f}" for v in b.detach().flatten().tolist()])
