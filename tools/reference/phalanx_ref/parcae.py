"""Parcae (model_type "parcae"): the parameter-golf PR #1728 model, spec parcae-golf.md sections 3 and 4,
in f32 with the tensor names of docs/checkpoint-layouts.md.

    e = RMS(E[ids]);  x_t = e_t + lambda sigmoid(w . e_t[:12]) e_{t-1}  (SmearGate);  x0 = x
    virtual layers: [0..loop_start-1] + [loop_start..loop_end] x (num_loops + 1) + [loop_end+1..L-1],
    the first half an encoder pushing U-Net skips, the second a decoder popping them (lerp); a Parcae
    boundary x <- A x + B x0 on every re-entry into loop_start; decoder layers from parallel_start_layer
    run as a two-lane parallel block; logits = softcap tanh(RMS(x) E^T / softcap).
Every RMSNorm is weightless. A batch row is one sequence: positions are 0..T-1 and attention never
crosses rows.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import Fields, geometry, greedy, rms, rope_cos_sin, rope_fields, rope_inv_freq

# PR #1648's per-layer xIELU constants [a_p, a_n, b_p, b_n], the default for the 11-layer golf model.
GOLF_XIELU = [
    [0.103, 0.39, 0.126, 0.785], [0.196, 0.578, 0.07, 0.638], [1.415, 0.363, 0.0, 0.405], [1.196, 0.491, 0.0, 0.377],
    [1.485, 0.536, 0.0, 0.314], [1.546, 0.548, 0.002, 0.289], [1.337, 0.579, 0.017, 0.313], [1.727, 0.983, 0.067, 0.571],
    [1.495, 1.058, 0.005, 0.42], [0.988, 0.935, 0.058, 0.286], [0.917, 0.845, 0.568, 0.52],
]


def parse_config(d):
    f = Fields(d)
    c = geometry(f, tie_default=True, intermediate_default=4 * f.get("hidden_size", required=True))
    L = c["num_hidden_layers"]
    c["num_key_value_heads"] = f.get("num_key_value_heads", c["num_attention_heads"])
    c["rope_theta"], c["rope_scaling"] = rope_fields(f)
    split = f.get("local_window_split_layer", 6)
    c.update(
        rope_dims=f.get("rope_dims", 16),
        logit_softcap=f.get("logit_softcap", 30.0),
        global_attn_layers=f.get("global_attn_layers", [4, 9, 10]),
        local_window_size_early=f.get("local_window_size_early", 512),
        local_window_size_late=f.get("local_window_size_late", 1024),
        local_window_split_layer=L // 2 if split == -1 else split,
        num_loops=f.get("num_loops", 2),
        loop_start=f.get("loop_start", 3),
        loop_end=f.get("loop_end", 5),
        parallel_start_layer=f.get("parallel_start_layer", 8),
        xsa_last_n=f.get("xsa_last_n", L),
        attn_out_gate_width=f.get("attn_out_gate_width", 12),
        smear_gate_width=f.get("smear_gate_width", 12),
        xielu_coefficients=f.get("xielu_coefficients", GOLF_XIELU if L == 11 else None, required=L != 11),
        rms_norm_eps=f.get("rms_norm_eps", torch.finfo(torch.float32).eps),  # F.rms_norm(eps=None) on f32
        smear_gate_reset=f.get("smear_gate_reset", False),
    )
    if c["smear_gate_reset"]:
        c["bos_token_id"] = f.get("bos_token_id", required=True)
    if len(c["xielu_coefficients"]) != L:
        raise ValueError(f"config.json: xielu_coefficients needs one [a_p, a_n, b_p, b_n] per layer ({L})")
    encoder, decoder = schedule(c)
    parallel = [i >= c["parallel_start_layer"] for i in decoder]
    if any(p and not q for p, q in zip(parallel, parallel[1:])):
        raise ValueError("config.json: the decoder's parallel layers must be its last ones (parallel_start_layer past loop_end)")
    return c


def schedule(c):
    """The virtual layer order split into encoder (first half) and decoder (spec 3.2)."""
    ls, le, L = c["loop_start"], c["loop_end"], c["num_hidden_layers"]
    order = list(range(ls)) + list(range(ls, le + 1)) * (c["num_loops"] + 1) + list(range(le + 1, L))
    return order[: len(order) // 2], order[len(order) // 2 :]


def golf_rope(x, cos, sin, dims):
    """The golf script's RoPE on the first `dims` dims of x [..., T, D] (halves of those dims):
    x1' = x1 cos + x2 sin, x2' = -x1 sin + x2 cos; the rest passes through. Note the sign: this turns the
    other way from transformers' Llama RoPE."""
    h = dims // 2
    x1, x2, rest = x[..., :h], x[..., h:dims], x[..., dims:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos, rest), -1)


def xielu(u, coef):
    """phi(u) = a_p u^2 + b_p u for u > 0, a_n u^2 + b_n u otherwise (fixed per-layer constants)."""
    a_p, a_n, b_p, b_n = coef
    return torch.where(u > 0, u * (a_p * u + b_p), u * (a_n * u + b_n))


class ParcaeAttention(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        hidden, D = c["hidden_size"], c["head_dim"]
        self.H, self.Hkv, self.D, self.eps = c["num_attention_heads"], c["num_key_value_heads"], D, c["rms_norm_eps"]
        self.q_proj = nn.Linear(hidden, self.H * D, bias=False)
        self.k_proj = nn.Linear(hidden, self.Hkv * D, bias=False)
        self.v_proj = nn.Linear(hidden, self.Hkv * D, bias=False)
        self.o_proj = nn.Linear(self.H * D, hidden, bias=False)
        self.q_gain = nn.Parameter(torch.ones(self.H))
        self.gate_width = c["attn_out_gate_width"]
        self.attn_out_gate = nn.Linear(self.gate_width, self.H, bias=False)
        is_global = i in c["global_attn_layers"]
        # Global layers: full causal attention, RoPE on rope_dims only. Local: a window, full RoPE.
        self.window = None if is_global else (c["local_window_size_early"] if i < c["local_window_split_layer"] else c["local_window_size_late"])
        self.rope_dims = c["rope_dims"] if is_global else D
        self.xsa = i >= c["num_hidden_layers"] - c["xsa_last_n"]
        self.register_buffer("inv_freq", rope_inv_freq(self.rope_dims, c["rope_theta"], c["rope_scaling"]), persistent=False)

    def mask(self, T, device):
        """Query t attends keys s in [t - window, t] (window + 1 keys, flash-attn's inclusive window)."""
        t = torch.arange(T, device=device)
        allowed = t[None, :] <= t[:, None]
        return allowed if self.window is None else allowed & (t[:, None] - t[None, :] <= self.window)

    def forward(self, h, gate_src):
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2).float()
        cos, sin = rope_cos_sin(self.inv_freq, torch.arange(T, device=h.device))
        q = golf_rope(rms(q, self.eps), cos, sin, self.rope_dims) * self.q_gain[:, None, None]
        k = golf_rope(rms(k, self.eps), cos, sin, self.rope_dims)
        group = self.H // self.Hkv
        y = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask=self.mask(T, h.device))
        if self.xsa:
            # Remove from each head's output its component along the token's own (unit) value vector.
            vn = F.normalize(v, dim=-1).repeat_interleave(group, 1)
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        # AttnOutGate: per token and head, 2 sigmoid(W_g x_in[:width]) from the pre-norm residual input.
        g = 2 * torch.sigmoid(self.attn_out_gate(gate_src[..., : self.gate_width]).float())
        y = y * g.transpose(1, 2)[..., None]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.D))


class ParcaeMLP(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)
        self.coef = c["xielu_coefficients"][i]

    def forward(self, x):
        return self.down_proj(xielu(self.up_proj(x).float(), self.coef))


class ParcaeLayer(nn.Module):
    """Physical layer i: attention and MLP with their scales, resid_mix with x0, ln_scale 1/sqrt(i+1)."""

    def __init__(self, c, i):
        super().__init__()
        hidden = c["hidden_size"]
        self.self_attn = ParcaeAttention(c, i)
        self.mlp = ParcaeMLP(c, i)
        self.attn_scale = nn.Parameter(torch.ones(hidden))
        self.mlp_scale = nn.Parameter(torch.ones(hidden))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(hidden), torch.zeros(hidden))))
        self.ln_scale = (i + 1) ** -0.5
        self.eps = c["rms_norm_eps"]

    def read(self, x, x0):
        return self.resid_mix[0] * x + self.resid_mix[1] * x0

    def attn_branch(self, x_in):
        return self.attn_scale * self.self_attn(self.ln_scale * rms(x_in, self.eps), gate_src=x_in)

    def mlp_branch(self, x):
        return self.mlp_scale * self.mlp(self.ln_scale * rms(x, self.eps))

    def forward(self, x, x0):
        x_in = self.read(x, x0)
        x_mid = x_in + self.attn_branch(x_in)
        return x_mid + self.mlp_branch(x_mid)


class SmearGate(nn.Module):
    """x_t = e_t + lambda sigmoid(w . e_t[:width]) e_{t-1}, e_{-1} = 0: one scalar gate per token."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c["smear_gate_width"]))
        self.register_parameter("lambda", nn.Parameter(torch.zeros(1)))
        self.reset_at = c["bos_token_id"] if c["smear_gate_reset"] else None

    def forward(self, e, ids):
        g = getattr(self, "lambda") * torch.sigmoid(e[..., : self.weight.shape[0]] @ self.weight)
        if self.reset_at is not None:
            # The #1851 fix: a document's first token takes nothing from the token before it.
            g = g * (ids != self.reset_at)
        prev = F.pad(e[:, :-1], (0, 0, 1, 0))
        return e + g[..., None] * prev


class ParcaeModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden, L = c["hidden_size"], c["num_hidden_layers"]
        self.encoder, self.decoder = schedule(c)
        n_skips = min(len(self.encoder), len(self.decoder))
        self.embed_tokens = nn.Embedding(c["vocab_size"], hidden)
        self.smear_gate = SmearGate(c)
        self.layers = nn.ModuleList(ParcaeLayer(c, i) for i in range(L))
        self.skip_weights = nn.Parameter(torch.ones(n_skips, hidden))
        self.skip_gates = nn.Parameter(torch.zeros(n_skips, hidden))
        self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2))
        self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), 1.1))
        self.loop_log_A = nn.Parameter(torch.full((hidden,), -0.5))
        self.loop_delta = nn.Parameter(torch.ones(hidden))
        self.loop_B = nn.Parameter(torch.full((hidden,), 0.1))


class ParcaeForCausalLM(nn.Module):
    """forward(input_ids [B, T]) -> f32 logits [B, T, V] (soft-capped)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        c = self.c = parse_config(config)
        self.model = ParcaeModel(c)
        self.lm_head = None if c["tie_word_embeddings"] else nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def boundary(self, x, x0):
        """Parcae: x <- A x + B x0 with A = exp(-delta exp(log_A)), B = delta loop_B, delta = softplus(loop_delta)."""
        m = self.model
        delta = F.softplus(m.loop_delta)
        return torch.exp(-delta * torch.exp(m.loop_log_A)) * x + delta * m.loop_B * x0

    def skip(self, x, k, s):
        """U-Net skip k: lerp(w s, x, sigmoid(gate)) = w s + sigmoid(gate) (x - w s)."""
        ws = self.model.skip_weights[k] * s
        return ws + torch.sigmoid(self.model.skip_gates[k]) * (x - ws)

    def forward(self, input_ids):
        m, c, eps = self.model, self.c, self.c["rms_norm_eps"]
        x = x0 = m.smear_gate(rms(m.embed_tokens(input_ids), eps), input_ids)
        entries = 0  # entries into loop_start so far; the boundary fires on every one after the first
        skips = []
        for i in m.encoder:
            if i == c["loop_start"]:
                entries += 1
                if entries > 1:
                    x = self.boundary(x, x0)
            x = m.layers[i](x, x0)
            skips.append(x)
        lanes = None
        for k, i in enumerate(m.decoder):
            if i == c["loop_start"]:
                entries += 1
                if entries > 1:
                    x = self.boundary(x, x0)
            if i >= c["parallel_start_layer"]:
                # Two lanes from x; the skip then goes into lane 0 only, as in the golf script.
                lanes = lanes or [x, x]
                if k < len(m.skip_weights) and skips:
                    lanes[0] = self.skip(lanes[0], k, skips.pop())
                lanes = self.parallel(i, lanes, x0)
            else:
                if k < len(m.skip_weights) and skips:
                    x = self.skip(x, k, skips.pop())
                x = m.layers[i](x, x0)
        if lanes:
            x = 0.5 * (lanes[0] + lanes[1])
        h = rms(x, eps)
        z = F.linear(h, m.embed_tokens.weight) if self.lm_head is None else self.lm_head(h)
        cap = c["logit_softcap"]
        return cap * torch.tanh(z.float() / cap)

    def parallel(self, i, lanes, x0):
        """Attention reads lane 0, the MLP lane 1 (both mixed with x0); each writes into both lanes."""
        layer = self.model.layers[i]
        a = layer.attn_branch(layer.read(lanes[0], x0))
        f = layer.mlp_branch(layer.read(lanes[1], x0))
        r, P = self.model.parallel_resid_lambdas[i], self.model.parallel_post_lambdas[i]
        return [r[0] * lanes[0] + P[0, 0] * a + P[1, 0] * f, r[1] * lanes[1] + P[0, 1] * a + P[1, 1] * f]

    greedy = greedy

    def init_for_training(self, embed_std=0.005, qk_gain=4.0):
        """Spec 5 where it applies to AdamW training: embeddings N(0, embed_std), q/k/v/up orthogonal,
        o/down zero, every gate and mix at its identity value (as constructed). q_gain is one constant:
        the golf per-layer list belongs to its 11 layers and head_dim 64."""
        for layer in self.model.layers:
            a = layer.self_attn
            for w in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, layer.mlp.up_proj.weight):
                nn.init.orthogonal_(w)
            nn.init.zeros_(a.o_proj.weight)
            nn.init.zeros_(layer.mlp.down_proj.weight)
            nn.init.zeros_(a.attn_out_gate.weight)
            nn.init.constant_(a.q_gain, qk_gain)
        nn.init.normal_(self.model.embed_tokens.weight, 0.0, embed_std)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, 0.0, embed_std)
