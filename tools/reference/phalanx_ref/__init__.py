"""PyTorch references of Phalanx's presets (docs/checkpoint-layouts.md): one module per preset."""
import json
import os

from safetensors.torch import load_file

from . import llama, nanohammer, parcae, spartacus
from .common import greedy, load_state, logits_of, save_hf

CLASSES = {"monoid": spartacus.MonoidForCausalLM, "nanohammer": nanohammer.NanoHammerForCausalLM, "parcae": parcae.ParcaeForCausalLM}


def build(config, llama_attn="eager"):
    """A fresh f32 model of config["model_type"] from a config.json dict."""
    if config["model_type"] == "llama":
        return llama.build(config, llama_attn)
    return CLASSES[config["model_type"]](config).float()


def load_pretrained(path, llama_attn="eager"):
    """A checkpoint folder (config.json + model.safetensors) as an f32 model. A monoid config without
    decay_variant gets the one spec 1.3.1's rule reads from the weights."""
    with open(os.path.join(path, "config.json")) as fh:
        config = json.load(fh)
    if config["model_type"] == "llama":
        return llama.load(path, llama_attn)
    weights = os.path.join(path, "model.safetensors")
    if config["model_type"] == "monoid" and "decay_variant" not in config:
        config = dict(config, decay_variant=spartacus.detect_decay_variant(load_file(weights), config["num_attention_heads"]))
    return load_state(build(config), weights)


__all__ = ["build", "load_pretrained", "save_hf", "greedy", "logits_of", "llama", "nanohammer", "parcae", "spartacus"]
