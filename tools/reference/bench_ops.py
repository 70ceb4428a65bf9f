"""PyTorch counterparts of the ops benchmarks (packages/ops/bench/matmul.ts), timed with CUDA events.

f32 with TF32 off, as the WebGPU kernels compute in plain f32. Prints one JSON line per case.
usage: python3 bench_ops.py
"""
import json

import torch

from timing import time_ms

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = "cuda"




def emit(name, median, **extra):
    print(json.dumps({"impl": "pytorch", "device": torch.cuda.get_device_name(), "name": name, "medianMs": median, **extra}), flush=True)


g = torch.Generator(device=dev).manual_seed(0)

for name, n in [("copy-1GiB", 2**28), ("copy-64MiB", 2**24)]:
    x = torch.randn(n, device=dev, generator=g)
    y = torch.empty_like(x)
    med = time_ms(lambda: y.copy_(x), reps=50)
    emit(name, med, GBps=2 * 4 * n / med / 1e6)
    del x, y

for name, M, N, K, trans in [("matmul-2048", 2048, 2048, 2048, False), ("matmul-4096", 4096, 4096, 4096, False), ("linear-4096", 4096, 4096, 4096, True)]:
    a = torch.randn(M, K, device=dev, generator=g)
    b = torch.randn(N, K, device=dev, generator=g) if trans else torch.randn(K, N, device=dev, generator=g)
    fn = (lambda: torch.nn.functional.linear(a, b)) if trans else (lambda: a @ b)
    med = time_ms(fn)
    emit(name, med, TFLOPs=2 * M * N * K / med / 1e9)

for name, N, K, dtype in [("gemv-4096x4096", 4096, 4096, torch.float32), ("gemv-2048x8192", 2048, 8192, torch.float32), ("gemv-8192x2048", 8192, 2048, torch.float32), ("gemv-4096x4096-bf16", 4096, 4096, torch.bfloat16), ("gemv-16384x8192", 16384, 8192, torch.float32)]:
    xv = torch.randn(1, K, device=dev, generator=g, dtype=dtype)
    w = torch.randn(N, K, device=dev, generator=g).to(dtype)
    med = time_ms(lambda: torch.nn.functional.linear(xv, w), reps=50)
    bytes_ = w.numel() * w.element_size() + (K + N) * xv.element_size()
    emit(name, med, GBps=bytes_ / med / 1e6)
