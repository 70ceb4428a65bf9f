"""PyTorch counterparts of @phalanx/varlen-attention's benchmark (packages/varlen-attention/bench/attention.ts):
f32 scaled_dot_product_attention on the same GPU, timed with CUDA events. One JSON line per case.

Causal prefill uses is_causal (PyTorch picks its fastest f32 kernel); the 512-token window needs a boolean mask,
which keeps PyTorch on its masked kernels, so both are reported.
usage: python3 bench_attention.py
"""
import json

import torch

from timing import time_ms
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = "cuda"




name = torch.cuda.get_device_name()
g = torch.Generator(device=dev).manual_seed(0)
H, D = 32, 64
for T, window in ((2048, None), (8192, None), (2048, 512), (8192, 512), (32768, 512)):
    q, k, v = (torch.randn(1, H, T, D, device=dev, generator=g) for _ in range(3))
    if window is None:
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        case = f"causal-{T}"
    else:
        i = torch.arange(T, device=dev)
        mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= window)
        fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        case = f"window512-{T}"
    try:
        ms = time_ms(fn)
        print(json.dumps({"impl": "pytorch", "device": name, "name": case, "medianMs": ms}), flush=True)
    except torch.OutOfMemoryError:
        print(json.dumps({"impl": "pytorch", "device": name, "name": case, "error": "out of memory"}), flush=True)
    del q, k, v
