"""PyTorch counterpart of the decode study (tools/bench/decode-study.ts): decode ms/token of a
Spartacus-geometry and a Llama-3.2-1B-geometry model with random f32 weights, at several context lengths.

Implementations (the `impl` of each JSON line):
  pytorch            plain PyTorch decode step, eager (static KV buffers / monoid states, updated in place)
  pytorch-cudagraph  the same step captured once per context with torch.cuda.graphs and replayed (CUDA only)
  transformers       llama only: transformers' LlamaForCausalLM (random init, sdpa) with a DynamicCache
                     pre-filled with random K/V of the context length (what `generate` runs, eager)

The context is synthesised as on the TypeScript side (random K/V of the context's length, or random monoid
states; the position set to the context length): exact for decode time, since a step reads every cached key
and value, or the fixed-size state, whatever their values. One step = forward of one token + greedy argmax
(the next token stays on the device), timed with CUDA events and synchronised per step (time.perf_counter on
the CPU). f32 with TF32 off. Prints one JSON line per case; names match the TypeScript rows
(decode-<model>-ctx<N>, prefill-llama-T<N>, peak-copy).

usage: python3 decode_study.py [--quick] [--contexts 64,1024,...] [--steps 32] [--models spartacus,llama]
                               [--impls pytorch,pytorch-cudagraph,transformers] [--prefill 512,2048,8192]
                               [--override '{"vocab_size": 8192}']
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

LLAMA_1B = dict(
    model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5,
    max_position_embeddings=131072, rope_theta=500000.0,
    rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192),
    tie_word_embeddings=True, attention_bias=False, mlp_bias=False, bos_token_id=128000, eos_token_id=128001,
)
SPARTACUS = dict(
    model_type="monoid", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5, decay_variant="vector-logsigmoid",
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
)
# the tiny geometry of `--quick`, as tools/bench/decode-study.ts's
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16, bos_token_id=1, eos_token_id=2)
TINY_LLAMA = {**LLAMA_1B, **TINY, "num_key_value_heads": 2, "max_position_embeddings": 4096, "rope_scaling": {**LLAMA_1B["rope_scaling"], "original_max_position_embeddings": 64}}
TINY_SPARTACUS = {**SPARTACUS, **TINY}

CONTEXTS = [64, 1024, 8192, 32768, 65536]

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")


def emit(**row):
    print(json.dumps(row), flush=True)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step_ms(fn, dev):
    """Milliseconds of one call of fn, its GPU work included (CUDA events, then a synchronize)."""
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_steps(fn, dev, warm, steps):
    for _ in range(warm):
        fn()
    sync(dev)
    return [step_ms(fn, dev) for _ in range(steps)]


def copy_gbps(dev, n):
    x = torch.randn(n, device=dev)
    y = torch.empty_like(x)
    ms = statistics.median(time_steps(lambda: y.copy_(x), dev, 3, 20))
    del x, y
    return 2 * 4 * n / ms / 1e6


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def llama3_inv_freq(c):
    """RoPE frequencies with llama3 scaling, as transformers' _compute_llama3_parameters."""
    D, theta, s = c["head_dim"], c["rope_theta"], c["rope_scaling"]
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Weights:
    """Random weights drawn on the device (norms 1 + N(0, 0.1^2), decay biases N(3, 0.5^2), the rest N(0, 1/fan_in))."""

    def __init__(self, dev, seed=1):
        self.dev = dev
        self.g = torch.Generator(device=dev).manual_seed(seed)
        self.bytes = 0

    def normal(self, *shape, std=None, mean=0.0):
        t = torch.empty(*shape, device=self.dev)
        t.normal_(mean, shape[-1] ** -0.5 if std is None else std, generator=self.g)
        self.bytes += t.numel() * 4
        return t


class PlainLlama:
    """Llama decode in plain PyTorch: static KV buffers [1, Hkv, maxlen, D] per layer, the position a device tensor,
    attention over the whole buffer with a mask (so one captured graph serves every step of a context)."""

    name = "llama"

    def __init__(self, c, dev):
        self.c, self.dev = c, dev
        L, hid, H, Hkv, D, I, V = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
        w = Weights(dev)
        self.embed = w.normal(V, hid)
        self.layers = [dict(
            n1=w.normal(hid, std=0.1, mean=1.0), n2=w.normal(hid, std=0.1, mean=1.0),
            q=w.normal(H * D, hid), k=w.normal(Hkv * D, hid), v=w.normal(Hkv * D, hid), o=w.normal(hid, H * D),
            gate=w.normal(I, hid), up=w.normal(I, hid), down=w.normal(hid, I),
        ) for _ in range(L)]
        self.norm = w.normal(hid, std=0.1, mean=1.0)
        self.weight_bytes = w.bytes
        self.inv_freq = llama3_inv_freq(c).float().to(dev)

    def state(self, ctx, maxlen):
        c = self.c
        L, Hkv, D = c["num_hidden_layers"], c["num_key_value_heads"], c["head_dim"]
        self.maxlen = maxlen
        self.kc = torch.zeros(L, 1, Hkv, maxlen, D, device=self.dev)
        self.vc = torch.zeros(L, 1, Hkv, maxlen, D, device=self.dev)
        self.kc[:, :, :, :ctx].normal_()
        self.vc[:, :, :, :ctx].normal_()
        freqs = torch.outer(torch.arange(maxlen, device=self.dev, dtype=torch.float32), self.inv_freq)
        emb = torch.cat([freqs, freqs], -1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self.pos = torch.tensor([ctx], device=self.dev)
        self.tok = torch.tensor([1], device=self.dev)
        self.keys = torch.arange(maxlen, device=self.dev)
        return 2 * L * ctx * Hkv * D * 4

    def free(self):
        del self.kc, self.vc, self.cos, self.sin

    def step(self):
        c = self.c
        H, Hkv, D, eps = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
        x = self.embed.index_select(0, self.tok)  # [1, hidden]
        cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)  # [1, D]
        mask = (self.keys <= self.pos).view(1, 1, 1, -1)

        def rope(t):
            t1, t2 = t[..., : D // 2], t[..., D // 2:]
            return t * cos + torch.cat([-t2, t1], -1) * sin

        for i, w in enumerate(self.layers):
            h = rms(x, w["n1"], eps)
            q = rope((h @ w["q"].T).view(1, H, 1, D))
            k = rope((h @ w["k"].T).view(1, Hkv, 1, D))
            v = (h @ w["v"].T).view(1, Hkv, 1, D)
            self.kc[i].index_copy_(2, self.pos, k)
            self.vc[i].index_copy_(2, self.pos, v)
            # GQA without expanding the cache: each KV head's H / Hkv query heads attend as rows of one query block
            o = F.scaled_dot_product_attention(q.view(1, Hkv, H // Hkv, D), self.kc[i], self.vc[i], attn_mask=mask)
            x = x + o.reshape(1, H * D) @ w["o"].T
            h = rms(x, w["n2"], eps)
            x = x + (F.silu(h @ w["gate"].T) * (h @ w["up"].T)) @ w["down"].T
        logits = rms(x, self.norm, eps) @ self.embed.T
        self.tok.copy_(logits.argmax(-1))
        self.pos.add_(1)


class PlainSpartacus:
    """Spartacus decode in plain PyTorch: per layer RMSNorm, q/k/v/o and decay projections, q/k RMSNorm per head,
    SiLU on k, S = diag(a) S + k v^T (in place), o = S^T q, SwiGLU MLP, tied head."""

    name = "spartacus"

    def __init__(self, c, dev):
        self.c, self.dev = c, dev
        L, hid, H, D, I, V = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
        w = Weights(dev)
        self.embed = w.normal(V, hid)
        self.layers = [dict(
            n1=w.normal(hid, std=0.1, mean=1.0), n2=w.normal(hid, std=0.1, mean=1.0),
            q=w.normal(H * D, hid), k=w.normal(H * D, hid), v=w.normal(H * D, hid), o=w.normal(hid, H * D),
            decay=w.normal(H * D, hid), decay_b=w.normal(H * D, std=0.5, mean=3.0),
            qn=w.normal(D, std=0.1, mean=1.0), kn=w.normal(D, std=0.1, mean=1.0), h0=w.normal(1, H, D, D, std=0.02),
            gate=w.normal(I, hid), up=w.normal(I, hid), down=w.normal(hid, I),
        ) for _ in range(L)]
        self.norm = w.normal(hid, std=0.1, mean=1.0)
        self.weight_bytes = w.bytes

    def state(self, ctx, maxlen):
        c = self.c
        L, H, D = c["num_hidden_layers"], c["num_attention_heads"], c["head_dim"]
        self.S = torch.randn(L, H, D, D, device=self.dev) * 0.5
        self.tok = torch.tensor([1], device=self.dev)
        return L * H * D * D * 4

    def free(self):
        del self.S

    def step(self):
        c = self.c
        H, D, eps = c["num_attention_heads"], c["head_dim"], c["rms_norm_eps"]
        x = self.embed.index_select(0, self.tok)
        for i, w in enumerate(self.layers):
            h = rms(x, w["n1"], eps)
            q = rms((h @ w["q"].T).view(H, D), w["qn"], eps) * D ** -0.5
            k = F.silu(rms((h @ w["k"].T).view(H, D), w["kn"], eps))
            v = (h @ w["v"].T).view(H, D)
            a = torch.sigmoid(h @ w["decay"].T + w["decay_b"]).view(H, D)  # vector-logsigmoid: log a = logsigmoid(z)
            S = self.S[i]
            S.mul_(a.unsqueeze(-1)).add_(k.unsqueeze(-1) * v.unsqueeze(-2))
            o = torch.einsum("hkv,hk->hv", S, q)
            x = x + o.reshape(1, H * D) @ w["o"].T
            h = rms(x, w["n2"], eps)
            x = x + (F.silu(h @ w["gate"].T) * (h @ w["up"].T)) @ w["down"].T
        logits = rms(x, self.norm, eps) @ self.embed.T
        self.tok.copy_(logits.argmax(-1))


def graph_of(step, dev):
    """One decode step captured as a CUDA graph (after 3 eager steps on a side stream, as torch.cuda.graphs asks)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--contexts")
    p.add_argument("--steps", type=int)
    p.add_argument("--models", default="spartacus,llama")
    p.add_argument("--impls", default="pytorch,pytorch-cudagraph,transformers")
    p.add_argument("--prefill")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--override", default="{}", help="config.json fields over the geometry, as JSON")
    a = p.parse_args()
    dev = torch.device(a.device)
    contexts = [int(x) for x in a.contexts.split(",")] if a.contexts else ([16, 64] if a.quick else CONTEXTS)
    steps = a.steps or (4 if a.quick else 32)
    warm = 2 if a.quick else 4
    impls = a.impls.split(",")
    prefill_ts = [int(x) for x in a.prefill.split(",")] if a.prefill else ([16] if a.quick else [512, 2048, 8192])
    device = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    base = dict(device=device, torch=torch.__version__)
    if dev.type != "cuda" and "pytorch-cudagraph" in impls:
        log("decode_study: no CUDA, so no CUDA-graph rows")
        impls.remove("pytorch-cudagraph")

    copy = copy_gbps(dev, 2 ** 22 if a.quick else 2 ** 28)
    emit(impl="pytorch", name="peak-copy", GBps=copy, bytes=(2 ** 22 if a.quick else 2 ** 28) * 8, **base)

    with torch.inference_mode():
        for model in a.models.split(","):
            c = (TINY_LLAMA if model == "llama" else TINY_SPARTACUS) if a.quick else (LLAMA_1B if model == "llama" else SPARTACUS)
            c = {**c, **json.loads(a.override)}
            t0 = time.perf_counter()
            net = (PlainLlama if model == "llama" else PlainSpartacus)(c, dev)
            sync(dev)
            log(f"decode_study: {model} plain weights {net.weight_bytes / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s")
            wb = net.weight_bytes  # tied: the head reads the whole embedding each token
            common = dict(model=model, weights="f32", weightBytes=wb, weightBytesPerToken=wb, copyGBps=copy, rooflineMsPerToken=wb / copy / 1e6, **base)
            for ctx in contexts:
                maxlen = (ctx + 2 * (warm + steps) + 16 + 15) // 16 * 16  # a multiple of 16, as masked SDPA kernels like
                for impl in [i for i in impls if i in ("pytorch", "pytorch-cudagraph")]:
                    try:
                        used = net.state(ctx, maxlen)
                        if impl == "pytorch":
                            ms = time_steps(net.step, dev, warm, steps)
                        else:
                            g = graph_of(net.step, dev)
                            ms = time_steps(g.replay, dev, warm, steps)
                            del g
                        med = statistics.median(ms)
                        emit(impl=impl, name=f"decode-{model}-ctx{ctx}", context=ctx, medianMs=med, minMs=min(ms), maxMs=max(ms), msPerToken=med,
                             tokensPerSec=1e3 / med, reps=len(ms), stateBytesUsed=used, ofRoofline=wb / copy / 1e6 / med, **common)
                    except Exception as e:  # noqa: BLE001 (one case's failure is a row, not the end of the study)
                        emit(impl=impl, name=f"decode-{model}-ctx{ctx}", context=ctx, error=f"{type(e).__name__}: {e}"[:300], **common)
                    finally:
                        if hasattr(net, "kc") or hasattr(net, "S"):
                            net.free()
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
            del net
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if model == "llama" and "transformers" in impls:
                transformers_llama(c, dev, contexts, warm, steps, prefill_ts, copy, base)


def transformers_llama(c, dev, contexts, warm, steps, prefill_ts, copy, base):
    """transformers' LlamaForCausalLM, random init on the device, decoding from a pre-filled DynamicCache."""
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in c.items() if k != "model_type"}, attn_implementation="sdpa", dtype=torch.float32)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        hf = LlamaForCausalLM(cfg).eval()
    sync(dev)
    wb = sum(p.numel() * p.element_size() for p in hf.parameters())
    log(f"decode_study: transformers llama {wb / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s")
    common = dict(model="llama", weights="f32", weightBytes=wb, weightBytesPerToken=wb, copyGBps=copy, rooflineMsPerToken=wb / copy / 1e6, **base)
    L, Hkv, D = c["num_hidden_layers"], c["num_key_value_heads"], c["head_dim"]
    for ctx in contexts:
        try:
            cache = DynamicCache(config=cfg)
            for layer in range(L):
                cache.update(torch.randn(1, Hkv, ctx, D, device=dev), torch.randn(1, Hkv, ctx, D, device=dev), layer)
            tok = torch.tensor([[1]], device=dev)

            def step():
                nonlocal tok
                out = hf(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)

            ms = time_steps(step, dev, warm, steps)
            med = statistics.median(ms)
            emit(impl="transformers", name=f"decode-llama-ctx{ctx}", context=ctx, medianMs=med, minMs=min(ms), maxMs=max(ms), msPerToken=med,
                 tokensPerSec=1e3 / med, reps=len(ms), stateBytesUsed=2 * L * ctx * Hkv * D * 4, ofRoofline=wb / copy / 1e6 / med, cache="DynamicCache", **common)
        except Exception as e:  # noqa: BLE001
            emit(impl="transformers", name=f"decode-llama-ctx{ctx}", context=ctx, error=f"{type(e).__name__}: {e}"[:300], **common)
        finally:
            cache = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for T in prefill_ts:
        try:
            ids = (torch.arange(T, device=dev) * 7919 + 13).remainder(c["vocab_size"]).view(1, T)
            ms = time_steps(lambda: hf(input_ids=ids, use_cache=True, logits_to_keep=1), dev, 1, 3)
            med = statistics.median(ms)
            emit(impl="transformers", name=f"prefill-llama-T{T}", model="llama", T=T, medianMs=med, minMs=min(ms), maxMs=max(ms), tokensPerSec=T / (med / 1e3), **base)
        except Exception as e:  # noqa: BLE001
            emit(impl="transformers", name=f"prefill-llama-T{T}", model="llama", T=T, error=f"{type(e).__name__}: {e}"[:300], **base)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    del hf


if __name__ == "__main__":
    main()
