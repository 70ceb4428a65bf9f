"""Spartacus (model_type "monoid", spec spartacus-nanohammer.md section 1): Llama with MonoidAttention.

Per layer and head, with x the input_layernorm output:
    q_t = RMSNorm_q(W_q x_t) / sqrt(D);  k_t = SiLU(RMSNorm_k(W_k x_t));  v_t = W_v x_t
    log a_t = decay(W_decay x_t + b)     (vector over the key dim, or one scalar per head)
    S_t = diag(a_t) S_{t-1} + k_t v_t^T  from S_0 = h0;   o_t = S_t^T q_t   (read after the update)
No positions anywhere. The scan has two forms: `chunk` (GLA-style chunked parallel form, for training)
and `recurrent` (the literal recurrence above, the ground truth the checks compare against).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import Fields, RMSNorm, SwiGLU, greedy, init_weights, llama_fields

DECAY_VARIANTS = ("vector-logsigmoid", "vector-neg-softplus", "scalar-logsigmoid")
CHUNK, SUB = 64, 16


def parse_config(d):
    f = Fields(d)
    c = llama_fields(f, tie_default=True)
    kv = f.get("num_key_value_heads", c["num_attention_heads"])
    if kv != c["num_attention_heads"]:
        raise ValueError("config.json: monoid attention needs num_key_value_heads == num_attention_heads")
    c["decay_variant"] = f.get("decay_variant", "vector-logsigmoid")
    if c["decay_variant"] not in DECAY_VARIANTS:
        raise ValueError(f"config.json: decay_variant must be one of {DECAY_VARIANTS}")
    return c


def detect_decay_variant(tensors, heads):
    """Spec 1.3.1's rule for a checkpoint whose config does not say: decay_proj rows = heads means scalar
    decay; otherwise the sign of the mean bias picks logsigmoid (positive) or -softplus (negative)."""
    w, b = tensors["model.layers.0.self_attn.decay_proj.weight"], tensors["model.layers.0.self_attn.decay_proj.bias"]
    if w.shape[0] == heads:
        return "scalar-logsigmoid"
    return "vector-logsigmoid" if b.float().mean() > 0 else "vector-neg-softplus"


def log_decay(z, variant):
    """log a from the decay projection z, in f32 with the stable forms (logsigmoid = -softplus(-z))."""
    z = z.float()
    return -F.softplus(z) if variant == "vector-neg-softplus" else F.logsigmoid(z)


def recurrent_scan(q, k, v, ld, s0):
    """The literal recurrence. q, k, ld [B, H, T, D]; v [B, H, T, Dv]; s0 [B, H, D, Dv].
    Returns o [B, H, T, Dv] and the final state."""
    s, outs = s0, []
    for t in range(q.shape[2]):
        s = ld[:, :, t].exp().unsqueeze(-1) * s + k[:, :, t].unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        outs.append((q[:, :, t].unsqueeze(-2) @ s).squeeze(-2))
    return torch.stack(outs, 2), s


def chunk_scan(q, k, v, ld, s0):
    """Chunked form (spec 1.5d), the algorithm of tools/reference/monoid_scan.py, for any T: the tail is
    padded with identity elements (log a = 0, k = v = 0), which leave the state unchanged.
    Within a chunk with inclusive local cumsum B of log a:
        O = (Q * exp(B)) S_0 + A V,   A[r, s] = sum_i Q_r[i] K_s[i] exp(B_r[i] - B_s[i])  (s <= r)
        S_next = diag(exp(B_C)) S_0 + (K * exp(B_C - B))^T V
    A is built from sub-chunks of 16 so every exponent is <= 0: off the diagonal against the first row of
    the query sub-chunk, on the diagonal element by element."""
    B, H, T, D = q.shape
    Dv = v.shape[-1]
    pad = -T % CHUNK
    if pad:
        q, k, v, ld = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, ld))
    n = (T + pad) // CHUNK
    q, k, v, ld = (x.reshape(B, H, n, CHUNK, x.shape[-1]) for x in (q, k, v, ld))
    cum = ld.cumsum(3)
    total = cum[:, :, :, -1]
    local = (k * torch.exp(total.unsqueeze(3) - cum)).transpose(-1, -2) @ v
    entering, s = [], s0
    for c in range(n):
        entering.append(s)
        s = torch.exp(total[:, :, c]).unsqueeze(-1) * s + local[:, :, c]
    out = (q * torch.exp(cum)) @ torch.stack(entering, 2)
    m = CHUNK // SUB
    qs, ks, cs = (x.reshape(B, H, n, m, SUB, D) for x in (q, k, cum))
    tri = torch.ones(SUB, SUB, device=q.device, dtype=torch.bool).tril()
    rows = []
    for p in range(m):
        ref = cs[:, :, :, p, :1]
        qp = qs[:, :, :, p] * torch.exp(cs[:, :, :, p] - ref)
        blocks = []
        if p > 0:
            kq = ks[:, :, :, :p] * torch.exp(ref.unsqueeze(3) - cs[:, :, :, :p])
            blocks.append(qp @ kq.reshape(B, H, n, p * SUB, D).transpose(-1, -2))
        diff = (cs[:, :, :, p].unsqueeze(-2) - cs[:, :, :, p].unsqueeze(-3)).masked_fill(~tri.unsqueeze(-1), -math.inf)
        blocks.append((qs[:, :, :, p].unsqueeze(-2) * ks[:, :, :, p].unsqueeze(-3) * torch.exp(diff)).sum(-1))
        blocks.append(q.new_zeros(B, H, n, SUB, (m - 1 - p) * SUB))
        rows.append(torch.cat(blocks, -1))
    out = out + torch.cat(rows, -2) @ v
    return out.reshape(B, H, n * CHUNK, Dv)[:, :, :T], s


class MonoidAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, D, hidden = c["num_attention_heads"], c["head_dim"], c["hidden_size"]
        self.H, self.D, self.variant = H, D, c["decay_variant"]
        bias = c["attention_bias"]
        self.q_proj = nn.Linear(hidden, H * D, bias=bias)
        self.k_proj = nn.Linear(hidden, H * D, bias=bias)
        self.v_proj = nn.Linear(hidden, H * D, bias=bias)
        self.o_proj = nn.Linear(H * D, hidden, bias=bias)
        self.decay_proj = nn.Linear(hidden, H if self.variant.startswith("scalar") else H * D, bias=True)
        self.q_norm = RMSNorm(D, c["rms_norm_eps"])
        self.k_norm = RMSNorm(D, c["rms_norm_eps"])
        self.h0 = nn.Parameter(torch.zeros(1, H, D, D))

    def forward(self, x, scan):
        B, T, _ = x.shape
        H, D = self.H, self.D
        q = self.q_norm(self.q_proj(x).view(B, T, H, D)) * D**-0.5
        k = F.silu(self.k_norm(self.k_proj(x).view(B, T, H, D)))
        v = self.v_proj(x).view(B, T, H, D).float()
        ld = log_decay(self.decay_proj(x), self.variant).view(B, T, H, -1).expand(B, T, H, D)
        q, k, v, ld = (t.transpose(1, 2) for t in (q, k, v, ld))
        # The scan runs in f32 even under autocast: the state must not drift (spec 1.7).
        with torch.autocast(x.device.type, enabled=False):
            o, s = (chunk_scan if scan == "chunk" else recurrent_scan)(q, k, v, ld, self.h0.float().expand(B, H, D, D))
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * D)), s


class MonoidLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = MonoidAttention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = SwiGLU(c["hidden_size"], c["intermediate_size"], c["mlp_bias"])

    def forward(self, h, scan):
        a, s = self.self_attn(self.input_layernorm(h), scan)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), s


class MonoidModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(MonoidLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class MonoidForCausalLM(nn.Module):
    """forward(input_ids [B, T]) -> f32 logits [B, T, V]; `scan` picks the chunked or the literal form."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        c = self.c = parse_config(config)
        self.model = MonoidModel(c)
        self.lm_head = None if c["tie_word_embeddings"] else nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.scan = "chunk"

    def forward(self, input_ids, return_states=False):
        h = self.model.embed_tokens(input_ids)
        states = []
        for layer in self.model.layers:
            h, s = layer(h, self.scan)
            states.append(s)
        h = self.model.norm(h)
        logits = F.linear(h, self.model.embed_tokens.weight) if self.lm_head is None else self.lm_head(h)
        return (logits.float(), states) if return_states else logits.float()

    greedy = greedy

    def init_for_training(self, std=0.02):
        """Spec 1.8: normal linears, decay bias 3 (sigmoid(3) ~ 0.95, a long memory), h0 = 0."""
        init_weights(self, std, std / (2 * self.c["num_hidden_layers"]) ** 0.5)
        for layer in self.model.layers:
            nn.init.constant_(layer.self_attn.decay_proj.bias, 3.0 if self.c["decay_variant"] != "vector-neg-softplus" else -3.0)
            nn.init.zeros_(layer.self_attn.h0)
