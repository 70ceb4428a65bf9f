"""PyTorch f32 chunked monoid scan: the same math as @phalanx/monoid-scan's WebGPU chunk kernels (spec 1.5d),
written with batched matrix products, and the speed baseline for them. Also the decode step.

S_t = diag(exp(ld_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t. Chunks of 64 tokens: per chunk the local state
(K * exp(B_C - B))^T V, a sequential carry of states over chunks, then O = (Q * exp(B)) S_c + A V, where A
uses sub-chunks of 16: (Q_p * exp(B_p - g_p)) (K_q * exp(g_p - B_q))^T off the diagonal (g_p = B at the first
row of sub-chunk p, so both exponents are <= 0) and exp(B_r - B_s) element by element on it.

First checks itself against the literal recurrence (float64) on small random inputs, then prints one JSON
line per case (CUDA-event medians). usage: python3 monoid_scan.py
"""
import json
import math

import torch

from timing import time_ms

torch.backends.cuda.matmul.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = "cuda"
C, SUB = 64, 16


def chunk_scan(q, k, v, ld, s0):
    """q, k, ld: [B, H, T, Dk]; v: [B, H, T, Dv]; s0: [B, H, Dk, Dv]; T a multiple of C."""
    B, H, T, Dk = q.shape
    Dv = v.shape[-1]
    n = T // C
    q, k, v, ld = (x.reshape(B, H, n, C, x.shape[-1]) for x in (q, k, v, ld))
    cum = ld.cumsum(3)  # B_r, inclusive
    total = cum[:, :, :, -1]  # B_C: [B, H, n, Dk]
    local = (k * torch.exp(total.unsqueeze(3) - cum)).transpose(-1, -2) @ v  # [B, H, n, Dk, Dv]
    states = []
    s = s0
    for c in range(n):
        states.append(s)
        s = torch.exp(total[:, :, c]).unsqueeze(-1) * s + local[:, :, c]
    entering = torch.stack(states, 2)
    out = (q * torch.exp(cum)) @ entering  # [B, H, n, C, Dv]
    m = C // SUB
    qs, ks, cs = (x.reshape(B, H, n, m, SUB, Dk) for x in (q, k, cum))
    a = torch.zeros(B, H, n, C, C, device=q.device, dtype=q.dtype)
    tri = torch.ones(SUB, SUB, device=q.device, dtype=torch.bool).tril()
    for p in range(m):
        ref = cs[:, :, :, p, :1]  # g_p
        qp = qs[:, :, :, p] * torch.exp(cs[:, :, :, p] - ref)
        if p > 0:
            kq = ks[:, :, :, :p] * torch.exp(ref.unsqueeze(3) - cs[:, :, :, :p])  # [B, H, n, p, SUB, Dk]
            a[..., p * SUB:(p + 1) * SUB, : p * SUB] = qp @ kq.reshape(B, H, n, p * SUB, Dk).transpose(-1, -2)
        diff = cs[:, :, :, p].unsqueeze(-2) - cs[:, :, :, p].unsqueeze(-3)  # B_r - B_s: [.., SUB, SUB, Dk]
        diff = diff.masked_fill(~tri.unsqueeze(-1), -math.inf)
        a[..., p * SUB:(p + 1) * SUB, p * SUB:(p + 1) * SUB] = (qs[:, :, :, p].unsqueeze(-2) * ks[:, :, :, p].unsqueeze(-3) * torch.exp(diff)).sum(-1)
    out = out + a @ v
    return out.reshape(B, H, T, Dv), s


def step(s, q, k, v, ld):
    """One decode token: s [B, H, Dk, Dv]; q, k, ld [B, H, Dk]; v [B, H, Dv]."""
    s = torch.exp(ld).unsqueeze(-1) * s + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-2) @ s).squeeze(-2), s


def recurrence(q, k, v, ld, s0):
    s = s0.double()
    outs = []
    for t in range(q.shape[2]):
        o, s = step(s, q[:, :, t].double(), k[:, :, t].double(), v[:, :, t].double(), ld[:, :, t].double())
        outs.append(o)
    return torch.stack(outs, 2), s


def inputs(B, H, T, D, g):
    q = torch.randn(B, H, T, D, device=dev, generator=g) * D**-0.5
    k = torch.randn(B, H, T, D, device=dev, generator=g)
    v = torch.randn(B, H, T, D, device=dev, generator=g)
    ld = torch.nn.functional.logsigmoid(torch.randn(B, H, T, D, device=dev, generator=g) + 3)
    return q, k, v, ld




g = torch.Generator(device=dev).manual_seed(0)
# self-check, including strong decay (logsigmoid(z - 3)) where a naive factorisation would overflow
for bias in (3.0, -6.0):
    q, k, v, ld = inputs(2, 3, 256, 16, g)
    ld = torch.nn.functional.logsigmoid(torch.randn_like(ld) + bias)
    s0 = torch.randn(2, 3, 16, 16, device=dev, generator=g)
    o, s = chunk_scan(q, k, v, ld, s0)
    ro, rs = recurrence(q, k, v, ld, s0)
    err = max(((o.double() - ro).norm() / ro.norm()).item(), ((s.double() - rs).norm() / rs.norm()).item())
    assert err < 1e-4 and not torch.isnan(o).any(), f"chunk_scan disagrees with the recurrence: {err}"
    print(json.dumps({"impl": "pytorch", "name": f"selfcheck-bias{bias}", "relErr": err}), flush=True)

name = torch.cuda.get_device_name()
H, D = 32, 64
for T in (1024, 2048, 4096, 8192, 16384):
    q, k, v, ld = inputs(1, H, T, D, g)
    s0 = torch.zeros(1, H, D, D, device=dev)
    ms = time_ms(lambda: chunk_scan(q, k, v, ld, s0))
    print(json.dumps({"impl": "pytorch", "device": name, "name": f"prefill-{T}", "medianMs": ms, "tokensPerSec": T / (ms / 1e3)}), flush=True)
for B in (1, 64):
    s = torch.randn(B, H, D, D, device=dev, generator=g)
    q, k, v, ld = (x[:, :, 0] for x in inputs(B, H, 1, D, g))
    ms = time_ms(lambda: step(s, q, k, v, ld), reps=50)
    byts = 2 * B * H * D * D * 4 + 5 * B * H * D * 4
    print(json.dumps({"impl": "pytorch", "device": name, "name": "decode-b64" if B == 64 else "decode-ctx64", "medianMs": ms, "usPerToken": ms * 1e3, "GBps": byts / ms / 1e6}), flush=True)
