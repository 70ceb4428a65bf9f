"""Golden fixtures for the TypeScript parity tests: tiny random checkpoints in Hugging Face layout with the
reference's outputs, under test/fixtures/<name>/:

    config.json, model.safetensors    the checkpoint (llama ones written by transformers' save_pretrained)
    expected.json                      input_ids [2][T], logits [2][T][V] (f32, 7 significant digits),
                                       greedy {prompt, new_tokens, output = the new tokens only},
                                       final_state (spartacus, nanohammer), reference (script and versions)

Every output is computed from the checkpoint as written and read back, upcast to f32, so the bf16 fixtures
hold bf16 weights with f32 arithmetic. Runs check_refs first. Deterministic (seeded).
usage: python3 tools/reference/fixtures.py [--out test/fixtures]
"""
import argparse
import json
import os
import shutil
import sys

import torch
import torch.nn as nn
import transformers

import check_refs
from phalanx_ref import build, load_pretrained, save_hf
from phalanx_ref.common import greedy, logits_of

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)

# name -> (config, weight dtype, sequence length)
FIXTURES = {
    "llama-f32-tied": (dict(model_type="llama", vocab_size=128, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                            intermediate_size=96, rms_norm_eps=1e-5, max_position_embeddings=64, rope_theta=10000.0, rope_scaling=LLAMA3_ROPE,
                            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2), torch.float32, 24),
    "llama-bf16-untied": (dict(model_type="llama", vocab_size=112, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                               intermediate_size=96, rms_norm_eps=1e-5, max_position_embeddings=64, rope_theta=10000.0, rope_scaling=LLAMA3_ROPE,
                               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2), torch.bfloat16, 24),
    "spartacus-f32": (dict(model_type="monoid", architectures=["MonoidForCausalLM"], vocab_size=128, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                           head_dim=12, intermediate_size=96, rms_norm_eps=1e-5, decay_variant="vector-logsigmoid", tie_word_embeddings=True,
                           bos_token_id=1, eos_token_id=2), torch.float32, 24),
    "spartacus-bf16": (dict(model_type="monoid", architectures=["MonoidForCausalLM"], vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            head_dim=8, intermediate_size=64, rms_norm_eps=1e-5, decay_variant="vector-logsigmoid", tie_word_embeddings=True,
                            bos_token_id=1, eos_token_id=2), torch.bfloat16, 20),
    "nanohammer-f32": (dict(model_type="nanohammer", architectures=["NanoHammerForCausalLM"], vocab_size=96, hidden_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=12, intermediate_size=96, rms_norm_eps=1e-5, rope_theta=10000.0,
                            max_position_embeddings=64, tie_word_embeddings=False, state_dim=32, num_state_heads=4, state_cell_hidden_size=16,
                            holographic_pairing="interleaved", holographic_width=8, holographic_base=10000.0, holographic_normalize="none",
                            state_cell_steps=1, state_cell_norm="layer", state_cell_activation="gelu", state_cell_eps=1e-5,
                            bos_token_id=1, eos_token_id=2), torch.float32, 24),
    "parcae-f32": (dict(model_type="parcae", architectures=["ParcaeForCausalLM"], vocab_size=128, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, intermediate_size=64, rope_theta=10000.0, rope_dims=4, logit_softcap=8.0,
                        global_attn_layers=[3, 5], local_window_size_early=4, local_window_size_late=6, local_window_split_layer=3,
                        num_loops=2, loop_start=2, loop_end=3, parallel_start_layer=4, xsa_last_n=4, attn_out_gate_width=8, smear_gate_width=8,
                        tie_word_embeddings=True), torch.float32, 24),
    "parcae-bf16-untied": (dict(model_type="parcae", architectures=["ParcaeForCausalLM"], vocab_size=112, hidden_size=32, num_hidden_layers=5,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=8, intermediate_size=64, rope_theta=10000.0, rope_dims=4,
                                logit_softcap=8.0, global_attn_layers=[1, 4], local_window_size_early=3, local_window_size_late=5,
                                local_window_split_layer=-1, num_loops=1, loop_start=1, loop_end=2, parallel_start_layer=3,
                                attn_out_gate_width=6, smear_gate_width=6, tie_word_embeddings=False), torch.bfloat16, 24),
}


def randomize(model, g):
    """Non-trivial random weights with O(1) logits. Matrices ~ N(0, 1/sqrt(fan_in)), so each layer changes
    the residual stream as much as the embedding does (with less, tied models mostly repeat their input
    token); embeddings and an untied head N(0, 0.15); every other parameter (norm weights, gates, lambdas,
    mixes, skips, Parcae vectors, step sizes, h0) moves off its training-init identity value by N(0, 0.2),
    so every mechanism changes the output. Spartacus decay biases are drawn around 2 (decays ~0.5..0.99)."""
    seen = set()
    with torch.no_grad():
        for name, m in model.named_modules():
            w = getattr(m, "weight", None)
            if not isinstance(w, nn.Parameter) or id(w) in seen or not isinstance(m, (nn.Linear, nn.Embedding)):
                continue
            seen.add(id(w))
            std = 0.15 if isinstance(m, nn.Embedding) or name.endswith("lm_head") else w.shape[1] ** -0.5
            w.copy_(torch.randn(w.shape, generator=g) * std)
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            if name.endswith("decay_proj.bias"):
                p.copy_(2.0 + torch.randn(p.shape, generator=g))
            elif name.endswith("smear_gate.lambda"):
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def to_list(t):
    """Nested lists of floats at 7 significant digits (enough for f32 parity)."""
    if t.dim() == 1:
        return [float(f"{v:.7g}") for v in t.tolist()]
    return [to_list(x) for x in t]


def make(name, config, dtype, T, out_root, g):
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    config = dict(config)
    if config["model_type"] == "parcae":
        # Per-layer xIELU constants [a_p, a_n, b_p, b_n], random around the golf table's range.
        config["xielu_coefficients"] = [[round(float(x), 3) for x in row] for row in torch.rand(config["num_hidden_layers"], 4, generator=g) * torch.tensor([1.5, 1.0, 0.3, 0.8])]
    model = build(config)
    randomize(model, g)
    if config["model_type"] == "llama":
        model.to(dtype).save_pretrained(out)
    else:
        save_hf(model, config, out, dtype)
    model = load_pretrained(out).eval()
    ids = torch.randint(0, config["vocab_size"], (2, T), generator=g)
    expected = {"reference": f"tools/reference/fixtures.py (torch {torch.__version__}, transformers {transformers.__version__})", "input_ids": ids.tolist()}
    with torch.no_grad():
        # The literal forms (recurrence, not the chunked / parallel ones) produce the fixture.
        if config["model_type"] == "monoid":
            model.scan = "recurrent"
        if config["model_type"] == "nanohammer":
            model.integral = "recurrent"
        if config["model_type"] in ("monoid", "nanohammer"):
            logits, states = model(ids, return_states=True)
            expected["final_state"] = {
                "layout": "per layer: S_T [B, H, D, D] (key dim, value dim), the state after the last token" if config["model_type"] == "monoid"
                else "per layer: the holographic accumulator c_T [B, state_dim] after the last token (pairs laid out as token_to_state's output, unnormalized)",
                "layers": [to_list(s) for s in states],
            }
        else:
            logits = logits_of(model, ids)
        expected["logits"] = to_list(logits)
        prompt = ids[:1, :8]
        full = greedy(model, prompt, 8)
        new = full[0, 8:]
        # Gap between the best and second-best logit at each greedy step: parity needs it well above f32 noise.
        top2 = logits_of(model, full[:, :-1])[0, 7:].topk(2, -1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        if config["model_type"] == "llama":
            # transformers' own generate must agree with the recompute-everything greedy.
            hf = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 8:]
            assert torch.equal(hf, new), (hf, new)
    expected["greedy"] = {"prompt": prompt[0].tolist(), "new_tokens": 8, "output": new.tolist(), "min_margin": round(margin, 5)}
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh, separators=(",", ":"))
        fh.write("\n")
    std = logits.std().item()
    distinct = len(set(logits.argmax(-1).flatten().tolist()))
    print(f"{name}: logits std {std:.3f}, {distinct} distinct argmax over {2 * T} positions, greedy {new.tolist()} (min margin {margin:.4f})")
    if not 0.3 < std < 5 or distinct < T // 2 or margin < 1e-3:
        raise AssertionError(f"{name}: degenerate logits")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "test", "fixtures"))
    args = ap.parse_args()
    check_refs.main()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    for name, (config, dtype, T) in FIXTURES.items():
        make(name, config, dtype, T, os.path.normpath(args.out), g)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"{len(FIXTURES)} fixtures, {total / 1e6:.2f} MB in {os.path.normpath(args.out)}")


if __name__ == "__main__":
    sys.exit(main())
