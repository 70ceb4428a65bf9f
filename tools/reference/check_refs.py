"""Self-checks of the PyTorch references: each fast form against its literal definition.

- spartacus: chunked scan == literal recurrence (ops in float64 with mild and strong decay, and whole models);
- nanohammer: holographic recurrence == rotate -> cumsum -> unrotate == sum_s e^{-i w (t-s)} z_s in complex128
  (both pairings, per-head and whole-state widths), and the state-token attention == a per-query loop;
- parcae: one layer's windowed attention (local and global, partial RoPE, XSA, gate) == a per-query loop;
- RoPE llama3 inverse frequencies == transformers' own.
Raises on the first failure. usage: python3 tools/reference/check_refs.py
"""
import math

import torch
import torch.nn.functional as F

from phalanx_ref import nanohammer, parcae, spartacus
from phalanx_ref.common import rope_inv_freq


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check(name, err, tol):
    print(f"{name}: rel err {err:.2e}")
    if not err < tol:
        raise AssertionError(f"{name}: {err} >= {tol}")


def randomize(model, g, scale=0.3):
    """Random non-identity values in every parameter, so gates and mixes all matter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def check_spartacus(g):
    B, H, T, D = 2, 3, 150, 8
    for bias in (3.0, -6.0):
        q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))
        ld = F.logsigmoid(torch.randn(B, H, T, D, generator=g, dtype=torch.float64) + bias)
        s0 = torch.randn(B, H, D, D, generator=g, dtype=torch.float64)
        o, s = spartacus.chunk_scan(q, k, v, ld, s0)
        ro, rs = spartacus.recurrent_scan(q, k, v, ld, s0)
        check(f"spartacus chunk vs recurrence (decay bias {bias})", max(rel(o, ro), rel(s, rs)), 1e-10)
    for variant in spartacus.DECAY_VARIANTS:
        cfg = dict(model_type="monoid", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, head_dim=8, intermediate_size=48, decay_variant=variant)
        m = spartacus.MonoidForCausalLM(cfg)
        randomize(m, g)
        ids = torch.randint(0, 64, (2, 90), generator=g)
        m.scan = "recurrent"
        ref, ref_states = m(ids, return_states=True)
        m.scan = "chunk"
        out, states = m(ids, return_states=True)
        check(f"spartacus model chunk vs recurrent ({variant})", max(rel(out, ref), max(rel(a, b) for a, b in zip(states, ref_states))), 1e-5)


def holographic_brute(u, width, pairing, base):
    """c_t = sum_{s<=t} e^{-i w (t-s)} z_s in complex128, lanes as nanohammer.split_pairs reads them."""
    re, im = nanohammer.split_pairs(u.double(), width, pairing)
    z = torch.complex(re, im)
    w = base ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    T = u.shape[1]
    lag = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()
    kernel = torch.exp(-1j * lag[..., None] * w) * (lag >= 0)[..., None]  # [t, s, k]
    c = torch.einsum("tsk,bsnk->btnk", kernel, z)
    return nanohammer.join_pairs(c.real, c.imag, pairing)


def check_nanohammer(g):
    u = torch.randn(2, 100, 32, generator=g)
    for pairing in ("interleaved", "half"):
        for width in (8, 32):
            ref = holographic_brute(u, width, pairing, 10000.0)
            rc, rlast = nanohammer.holographic_recurrent(u, width, pairing, 10000.0)
            dc, dlast = nanohammer.holographic_direct(u, width, pairing, 10000.0)
            check(f"holographic recurrence vs closed form ({pairing}, width {width})", rel(rc, ref), 1e-5)
            check(f"holographic rotate/cumsum/unrotate vs recurrence ({pairing}, width {width})", max(rel(dc, rc), rel(dlast, rlast)), 1e-5)
    cfg = dict(model_type="nanohammer", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48, state_dim=16, num_state_heads=2, rope_theta=100.0)
    m = nanohammer.NanoHammerForCausalLM(cfg)
    randomize(m, g)
    ids = torch.randint(0, 64, (2, 40), generator=g)
    m.integral = "recurrent"
    ref = m(ids)
    m.integral = "direct"
    check("nanohammer model direct vs recurrent integral", rel(m(ids), ref), 1e-5)

    # The state-token attention against a loop: word t attends words s <= t and its own state token t.
    attn = m.model.layers[0].self_attn
    x, e = torch.randn(2, 12, 32, generator=g), torch.randn(2, 12, 32, generator=g)
    T, D, H, Hkv = 12, 8, 4, 2
    ang = torch.arange(T).double()[:, None] * m.inv_freq.double()[None, :]

    def rope(t, pos):  # rotate_half layout: dims j and j + D/2 turn by angle pos * inv_freq_j
        c, s = ang[pos].cos(), ang[pos].sin()
        return torch.cat((t[: D // 2] * c - t[D // 2 :] * s, t[D // 2 :] * c + t[: D // 2] * s))

    with torch.no_grad():
        out = attn(x, e, *(f.float() for f in (ang.cos(), ang.sin())))
        q, k, v = attn.q_proj(x).double(), attn.k_proj(x).double(), attn.v_proj(x).double()
        ks, vs = attn.k_proj(e).double(), attn.v_proj(e).double()
        y = torch.zeros(2, T, H * D, dtype=torch.float64)
        for b in range(2):
            for t in range(T):
                for h in range(H):
                    j = h // (H // Hkv)
                    qt = rope(q[b, t, h * D : (h + 1) * D], t)
                    keys = [rope(k[b, s, j * D : (j + 1) * D], s) for s in range(t + 1)] + [rope(ks[b, t, j * D : (j + 1) * D], t)]
                    vals = [v[b, s, j * D : (j + 1) * D] for s in range(t + 1)] + [vs[b, t, j * D : (j + 1) * D]]
                    p = torch.softmax(torch.stack([qt @ kk for kk in keys]) / math.sqrt(D), 0)
                    y[b, t, h * D : (h + 1) * D] = sum(pi * vv for pi, vv in zip(p, vals))
        check("nanohammer state-token attention vs per-query loop", rel(out, y @ attn.o_proj.weight.double().T), 1e-5)


def check_parcae(g):
    cfg = dict(model_type="parcae", vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
               rope_dims=4, global_attn_layers=[1], local_window_size_early=3, local_window_size_late=5, local_window_split_layer=2, num_loops=1, loop_start=1, loop_end=2,
               parallel_start_layer=3, attn_out_gate_width=6, smear_gate_width=6, xielu_coefficients=[[1.0, 0.5, 0.1, 0.3]] * 4)
    m = parcae.ParcaeForCausalLM(cfg)
    randomize(m, g)
    T, D, H, Hkv = 14, 8, 4, 2
    for i in (0, 1, 2):  # local early (window 3), global (partial RoPE), local late (window 5)
        attn = m.model.layers[i].self_attn
        h, src = torch.randn(2, T, 32, generator=g), torch.randn(2, T, 32, generator=g)
        with torch.no_grad():
            out = attn(h, src).double()
            q, k, v = attn.q_proj(h).double(), attn.k_proj(h).double(), attn.v_proj(h).double()
            r = attn.rope_dims
            inv = 10000.0 ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)
            window = attn.window if attn.window is not None else T

            def rope(x, pos):  # golf layout: x1 = x[:r/2], x2 = x[r/2:r]; (x1 cos + x2 sin, -x1 sin + x2 cos)
                x = x / torch.sqrt((x * x).mean() + attn.eps)
                c, s = (pos * inv).cos(), (pos * inv).sin()
                return torch.cat((x[: r // 2] * c + x[r // 2 : r] * s, -x[: r // 2] * s + x[r // 2 : r] * c, x[r:]))

            y = torch.zeros(2, T, H * D, dtype=torch.float64)
            for b in range(2):
                for t in range(T):
                    gate = 2 * torch.sigmoid(attn.attn_out_gate.weight.double() @ src[b, t, : attn.gate_width].double())
                    for hh in range(H):
                        j = hh // (H // Hkv)
                        qt = rope(q[b, t, hh * D : (hh + 1) * D], t) * attn.q_gain[hh].double()
                        keys = range(max(0, t - window), t + 1)
                        sc = torch.stack([qt @ rope(k[b, s, j * D : (j + 1) * D], s) for s in keys]) / math.sqrt(D)
                        p = torch.softmax(sc, 0)
                        yt = sum(pi * v[b, s, j * D : (j + 1) * D] for pi, s in zip(p, keys))
                        vt = v[b, t, j * D : (j + 1) * D]
                        vn = vt / vt.norm()
                        yt = yt - (yt @ vn) * vn
                        y[b, t, hh * D : (hh + 1) * D] = gate[hh] * yt
            check(f"parcae layer {i} attention (window {attn.window}, rope dims {r}) vs per-query loop", rel(out, y @ attn.o_proj.weight.double().T), 1e-5)


def check_rope():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, max_position_embeddings=64, rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, **scaling))
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    check("llama3 RoPE inv_freq vs transformers", rel(rope_inv_freq(16, 10000.0, scaling), theirs), 1e-7)


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    check_spartacus(g)
    check_nanohammer(g)
    check_parcae(g)
    check_rope()
    print("all reference checks passed")


if __name__ == "__main__":
    main()
