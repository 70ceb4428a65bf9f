"""NanoHammer (model_type "nanohammer", docs/checkpoint-layouts.md; a derived spec, spartacus-nanohammer.md
section 2): Llama plus a per-layer state stream. With h the layer input and x = input_layernorm(h):

    u_t = token_to_state(x_t)                      [state_dim]
    c_t = e^{-i omega} c_{t-1} + u_t               holographic integral, c_{-1} = 0
    S_t = state_cell(c_t)                          multi-head Euler cell
    e_t = state_projection(S_t)                    [hidden]

e_t is a state token: its key and value come from the same k_proj / v_proj, with RoPE at position t.
Word query t attends to words s <= t and to its own state token only (mask variant A). The MLP runs on the
words; the state rows are not carried to the next layer.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import Fields, RMSNorm, SwiGLU, greedy, init_weights, llama_fields, rope_cos_sin, rope_fields, rope_inv_freq, rotate_half_rope


def parse_config(d):
    f = Fields(d)
    c = llama_fields(f, tie_default=False)
    c["num_key_value_heads"] = f.get("num_key_value_heads", c["num_attention_heads"])
    c["rope_theta"], c["rope_scaling"] = rope_fields(f)
    c["state_dim"] = f.get("state_dim", 512)
    c["num_state_heads"] = f.get("num_state_heads", 16)
    d_s = c["state_dim"] // c["num_state_heads"]
    c.update(
        holographic_pairing=f.get("holographic_pairing", "interleaved"),
        holographic_width=f.get("holographic_width", d_s),
        holographic_base=f.get("holographic_base", 10000.0),
        holographic_normalize=f.get("holographic_normalize", "none"),
        state_cell_steps=f.get("state_cell_steps", 1),
        state_cell_norm=f.get("state_cell_norm", "layer"),
        state_cell_activation=f.get("state_cell_activation", "gelu"),
        state_cell_eps=f.get("state_cell_eps", 1e-5),
        # Not in the layout table (the TypeScript side reads it from fc1's shape): the cell MLP's width.
        state_cell_hidden_size=f.get("state_cell_hidden_size", 2 * d_s),
    )
    if c["state_dim"] % c["holographic_width"] or c["holographic_width"] % 2:
        raise ValueError("config.json: holographic_width must be even and divide state_dim")
    for field, allowed in (("holographic_pairing", ("interleaved", "half")), ("holographic_normalize", ("none", "mean", "sqrt")),
                           ("state_cell_norm", ("layer", "rms")), ("state_cell_activation", ("gelu", "silu"))):
        if c[field] not in allowed:
            raise ValueError(f"config.json: {field} must be one of {allowed}")
    return c


def split_pairs(u, width, pairing):
    """Real [..., Ds] -> (re, im) [..., Ds/width, width/2]: blocks of `width` dims, each read as width/2
    complex lanes, adjacent (x[2k], x[2k+1]) for 'interleaved' or (x[k], x[k+width/2]) for 'half'."""
    x = u.reshape(*u.shape[:-1], -1, width)
    if pairing == "interleaved":
        return x[..., 0::2], x[..., 1::2]
    return x[..., : width // 2], x[..., width // 2 :]


def join_pairs(re, im, pairing):
    """Inverse of split_pairs."""
    x = torch.stack((re, im), -1).flatten(-2) if pairing == "interleaved" else torch.cat((re, im), -1)
    return x.flatten(-2)


def holographic_omega(width, base, device):
    """omega_k = base^(-2k/width), k < width/2, in float64 (angles are formed from it)."""
    return base ** (-torch.arange(0, width, 2, dtype=torch.float64, device=device) / width)


def holographic_recurrent(u, width, pairing, base):
    """c_t = e^{-i omega} c_{t-1} + u_t over u [B, T, Ds], from c_{-1} = 0: the ground truth.
    Returns all c_t [B, T, Ds] and the last one [B, Ds], in u's layout."""
    re_u, im_u = split_pairs(u.float(), width, pairing)
    w = holographic_omega(width, base, u.device)
    cos, sin = w.cos().float(), w.sin().float()
    re, im = torch.zeros_like(re_u[:, 0]), torch.zeros_like(im_u[:, 0])
    res, ims = [], []
    for t in range(u.shape[1]):
        # (re + i im) e^{-i omega} = (re cos + im sin) + i (im cos - re sin)
        re, im = re * cos + im * sin + re_u[:, t], im * cos - re * sin + im_u[:, t]
        res.append(re)
        ims.append(im)
    c = join_pairs(torch.stack(res, 1), torch.stack(ims, 1), pairing)
    return c, c[:, -1]


def holographic_direct(u, width, pairing, base):
    """The same integral as rotate -> prefix sum -> unrotate: c_t = Rot^-1(sum_{s<=t} Rot(u_s, s), t).
    Parallel over t, used for training; angles t*omega are formed in float64."""
    re_u, im_u = split_pairs(u.float(), width, pairing)
    T = u.shape[1]
    ang = torch.arange(T, dtype=torch.float64, device=u.device)[:, None] * holographic_omega(width, base, u.device)
    cos, sin = ang.cos().float()[None, :, None], ang.sin().float()[None, :, None]
    # Rot(z, s) = z e^{+i omega s}
    re_c = (re_u * cos - im_u * sin).cumsum(1)
    im_c = (re_u * sin + im_u * cos).cumsum(1)
    # Rot^-1(I, t) = I e^{-i omega t}
    c = join_pairs(re_c * cos + im_c * sin, im_c * cos - re_c * sin, pairing)
    return c, c[:, -1]


class StateCell(nn.Module):
    """K explicit Euler steps S_h <- S_h + eta_h fc2(act(fc1(Norm_pre(S_h)))) per state head h (MLP shared by
    the heads, pre-norm over each head's d_s values), each followed by Norm_post over the whole state."""

    def __init__(self, c):
        super().__init__()
        self.heads, self.steps = c["num_state_heads"], c["state_cell_steps"]
        d_s = c["state_dim"] // self.heads
        self.step_size = nn.Parameter(torch.full((self.heads,), 0.1))
        self.pre_norm = make_norm(c, d_s)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d_s, c["state_cell_hidden_size"])
        self.mlp.fc2 = nn.Linear(c["state_cell_hidden_size"], d_s)
        self.act = (lambda x: F.gelu(x, approximate="none")) if c["state_cell_activation"] == "gelu" else F.silu
        self.post_norm = make_norm(c, c["state_dim"])

    def forward(self, s):
        for _ in range(self.steps):
            h = s.unflatten(-1, (self.heads, -1))
            h = h + self.step_size[:, None] * self.mlp.fc2(self.act(self.mlp.fc1(self.pre_norm(h))))
            s = self.post_norm(h.flatten(-2))
        return s


def make_norm(c, n):
    """LayerNorm (weight and bias, biased variance) or RMSNorm (weight only), per state_cell_norm."""
    if c["state_cell_norm"] == "layer":
        return nn.LayerNorm(n, eps=c["state_cell_eps"])
    return RMSNorm(n, c["state_cell_eps"])


class NanoHammerAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden, D = c["hidden_size"], c["head_dim"]
        self.H, self.Hkv, self.D = c["num_attention_heads"], c["num_key_value_heads"], D
        bias = c["attention_bias"]
        self.q_proj = nn.Linear(hidden, self.H * D, bias=bias)
        self.k_proj = nn.Linear(hidden, self.Hkv * D, bias=bias)
        self.v_proj = nn.Linear(hidden, self.Hkv * D, bias=bias)
        self.o_proj = nn.Linear(self.H * D, hidden, bias=bias)

    def forward(self, x, e, cos, sin):
        """x: words [B, T, hidden]; e: state tokens [B, T, hidden]; cos, sin [T, D/2]."""
        B, T, _ = x.shape
        heads = lambda t, n: t.view(B, T, n, self.D).transpose(1, 2)
        rope = lambda t: rotate_half_rope(t, cos, sin)
        q = rope(heads(self.q_proj(x), self.H))
        k = torch.cat((rope(heads(self.k_proj(x), self.Hkv)), rope(heads(self.k_proj(e), self.Hkv))), 2)
        v = torch.cat((heads(self.v_proj(x), self.Hkv), heads(self.v_proj(e), self.Hkv)), 2).float()
        group = self.H // self.Hkv
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        # Keys 0..T-1 are the words, T..2T-1 the state tokens: word t sees words s <= t and state t.
        words = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        own_state = torch.eye(T, dtype=torch.bool, device=x.device)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.cat((words, own_state), 1))
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.H * self.D))


class NanoHammerLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden = c["hidden_size"]
        self.c = c
        self.input_layernorm = RMSNorm(hidden, c["rms_norm_eps"])
        self.token_to_state = nn.Linear(hidden, c["state_dim"])
        self.state_cell = StateCell(c)
        self.state_projection = nn.Linear(c["state_dim"], hidden)
        self.self_attn = NanoHammerAttention(c)
        self.post_attention_layernorm = RMSNorm(hidden, c["rms_norm_eps"])
        self.mlp = SwiGLU(hidden, c["intermediate_size"], c["mlp_bias"])

    def forward(self, h, cos, sin, integral):
        c = self.c
        x = self.input_layernorm(h)
        with torch.autocast(x.device.type, enabled=False):
            u = self.token_to_state(x).float()
            form = holographic_recurrent if integral == "recurrent" else holographic_direct
            acc, last = form(u, c["holographic_width"], c["holographic_pairing"], c["holographic_base"])
        if c["holographic_normalize"] != "none":
            n = torch.arange(1, acc.shape[1] + 1, device=acc.device, dtype=acc.dtype)[:, None]
            acc = acc / (n if c["holographic_normalize"] == "mean" else n.sqrt())
        e = self.state_projection(self.state_cell(acc))
        h = h + self.self_attn(x, e, cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h)), last


class NanoHammerModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(NanoHammerLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class NanoHammerForCausalLM(nn.Module):
    """forward(input_ids [B, T]) -> f32 logits [B, T, V]. `integral` picks the holographic form:
    'recurrent' (the literal recurrence) or 'direct' (rotate / cumsum / unrotate, parallel)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        c = self.c = parse_config(config)
        self.model = NanoHammerModel(c)
        self.lm_head = None if c["tie_word_embeddings"] else nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(c["head_dim"], c["rope_theta"], c["rope_scaling"]), persistent=False)
        self.integral = "direct"

    def forward(self, input_ids, return_states=False):
        cos, sin = rope_cos_sin(self.inv_freq, torch.arange(input_ids.shape[1], device=input_ids.device))
        h = self.model.embed_tokens(input_ids)
        states = []
        for layer in self.model.layers:
            h, last = layer(h, cos, sin, self.integral)
            states.append(last)
        h = self.model.norm(h)
        logits = F.linear(h, self.model.embed_tokens.weight) if self.lm_head is None else self.lm_head(h)
        return (logits.float(), states) if return_states else logits.float()

    greedy = greedy

    def init_for_training(self, std=0.02):
        init_weights(self, std, std / (2 * self.c["num_hidden_layers"]) ** 0.5)
