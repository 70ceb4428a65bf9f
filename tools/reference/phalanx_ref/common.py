"""Pieces the presets share: config reading, RMSNorm, the SwiGLU MLP, RoPE, greedy decoding and the
Hugging Face layout (config.json + model.safetensors) on disk.

Every model computes in f32 (a bf16 checkpoint is upcast on load), as docs/checkpoint-layouts.md asks.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


class Fields:
    """Reads a config.json dict with defaults; a field without a default is required."""

    def __init__(self, d):
        self.d = d

    def get(self, name, default=None, required=False):
        if name in self.d:
            return self.d[name]
        if required:
            raise ValueError(f"config.json: '{name}' is required")
        return default


def geometry(f, tie_default, intermediate_default=None):
    """The fields every preset shares, with packages/checkpoint/src/config.ts' defaults."""
    hidden = f.get("hidden_size", required=True)
    heads = f.get("num_attention_heads", required=True)
    head_dim = f.get("head_dim") or hidden // heads
    inter = f.get("intermediate_size", intermediate_default, required=intermediate_default is None)
    return dict(
        vocab_size=f.get("vocab_size", required=True),
        hidden_size=hidden,
        num_hidden_layers=f.get("num_hidden_layers", required=True),
        num_attention_heads=heads,
        head_dim=head_dim,
        intermediate_size=inter,
        tie_word_embeddings=f.get("tie_word_embeddings", tie_default),
    )


def llama_fields(f, tie_default):
    """transformers' LlamaConfig fields the llama-like presets read (defaults as config.ts)."""
    g = geometry(f, tie_default)
    act = f.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json: hidden_act '{act}' is not supported (only silu)")
    g.update(
        rms_norm_eps=f.get("rms_norm_eps", 1e-6),
        attention_bias=f.get("attention_bias", False),
        mlp_bias=f.get("mlp_bias", False),
    )
    return g


def rope_fields(f):
    """(theta, scaling) from transformers 5 `rope_parameters` or 4 `rope_theta` + `rope_scaling`."""
    params = f.get("rope_parameters") or f.get("rope_scaling") or {}
    theta = params.get("rope_theta", f.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "llama3":
        return theta, {k: params[k] for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
    raise ValueError(f"config.json: rope_type '{kind}' is not supported (default or llama3)")


class RMSNorm(nn.Module):
    """Llama's RMSNorm, in f32: x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms(x, self.eps) * self.weight.float()


def rms(x, eps):
    """Weightless RMSNorm over the last dim, in f32 (parcae's F.rms_norm without a weight)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): Llama's MLP with its tensor names."""

    def __init__(self, hidden, inter, bias=False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=bias)
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_inv_freq(dim, theta, scaling=None):
    """inv_freq_j = theta^(-2j/dim), j < dim/2, computed as transformers does (f32), with llama3 scaling."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if scaling is None:
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    # Long wavelengths are slowed by `factor`, short ones kept, and the band between interpolated.
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(inv_freq, positions):
    """cos, sin [T, dim/2] of positions x inv_freq (f32, as transformers forms them)."""
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    return angles.cos(), angles.sin()


def rotate_half_rope(x, cos, sin):
    """transformers' Llama RoPE on the last dim of x [..., T, D] (halves x1 = x[:D/2], x2 = x[D/2:]):
    (x1 cos - x2 sin, x2 cos + x1 sin)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h].float(), x[..., h:].float()
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


def greedy(model, ids, n):
    """Appends n argmax tokens to ids [B, T], recomputing the whole forward for every token."""
    for _ in range(n):
        nxt = logits_of(model, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def logits_of(model, ids):
    """f32 logits [B, T, V] of any preset (transformers' models return an output object)."""
    out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def save_hf(model, config, out_dir, dtype=torch.float32):
    """Writes config.json and model.safetensors. With tied embeddings lm_head.weight is left out; config
    gets its `dtype`. Returns the path of the safetensors file."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)
    path = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    config = dict(config, dtype=str(dtype).removeprefix("torch."))
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return path


def load_state(model, path):
    """Loads a safetensors file into model, upcast to f32; a missing or extra tensor is an error (a tied
    model has no lm_head parameter, so none is expected)."""
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return model


def init_weights(model, std, residual_std):
    """Training init: normal(std) for linears and embeddings, residual_std for the projections that
    write into the residual stream (o_proj, down_proj), zero biases. Norm weights stay as constructed."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            is_residual = name.endswith(("o_proj", "down_proj"))
            nn.init.normal_(m.weight, 0.0, residual_std if is_residual else std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
