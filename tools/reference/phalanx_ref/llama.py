"""llama: transformers' own LlamaForCausalLM, so the TypeScript preset is checked against the real thing."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .common import init_weights


def build(config, attn="eager"):
    """A LlamaForCausalLM in f32 from a config.json dict. Eager attention is the plain softmax the
    fixtures want; training passes "sdpa" for speed."""
    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "dtype", "torch_dtype")})
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).float()


def load(path, attn="eager"):
    """A saved LlamaForCausalLM, upcast to f32."""
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)


def init_for_training(model, std=0.02):
    """Normal(std) linears and embeddings, residual projections scaled down by sqrt(2 L), norms at 1."""
    init_weights(model, std, std / (2 * model.config.num_hidden_layers) ** 0.5)
