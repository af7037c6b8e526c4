"""NCHW vs channels_last on CPU: DeepLabV3-R18, 256x256, batch 8, fp32 training steps (forward, backward, Adam) on
random tensors, one process, the two formats alternating for 3 rounds; prints images/s and the best of each.

Run: PYTHONPATH=. python benchmarks/cpu_memory_format.py   (segtrain.training.precision.CPU_MEMORY_FORMAT
follows its result; benchmarks/results/cpu_memory_format.log is the recorded run).
"""

from __future__ import annotations

import time

import torch

from segtrain.contract import build_spec
from segtrain.models import build_model

SPEC = build_spec("deeplab", "resnet18", [(1, "person"), (17, "cat"), (37, "sports ball"), (84, "book")], 256)
BATCH, WARMUP, STEPS, ROUNDS = 8, 2, 4, 3


def images_per_s(memory_format: torch.memory_format) -> float:
    model = build_model(SPEC, encoder_weights="none").train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(BATCH, 3, 256, 256).contiguous(memory_format=memory_format)
    y = torch.randint(0, SPEC.num_classes, (BATCH, 256, 256))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        step()
    return BATCH * STEPS / (time.perf_counter() - t0)


def main() -> None:
    torch.manual_seed(0)
    best: dict[str, float] = {}
    for round_ in range(ROUNDS):
        for name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            value = images_per_s(fmt)
            best[name] = max(best.get(name, 0.0), value)
            print(round_, name, f"{value:.2f} img/s", flush=True)
    print(best, "ratio channels_last/nchw", best["channels_last"] / best["nchw"])


if __name__ == "__main__":
    main()
