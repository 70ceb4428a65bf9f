"""Tiny trained checkpoints of every preset on the Brown Corpus (the embedded default models).

1. A byte-level BPE tokenizer (vocab 4096; <|endoftext|> = id 0 is bos and eos, then <|user|>, <|assistant|>,
   <|end|>) trained on brown-train.txt, with a chat template in tokenizer_config.json.
2. One model per preset, ~2.8 M parameters each (tied embeddings, hidden 256), trained with AdamW (bf16
   autocast on CUDA, f32 weights) on random T = 256 crops of the training documents joined with eos, for a
   wall-clock budget (--minutes) and/or a step count (--steps) per model, the learning rate annealed over
   whichever runs out first. The weights kept are those with the lowest loss on a selection split (every
   20th training document, never trained on); the held-out split is only evaluated, never used to choose.
3. Export in Hugging Face layout to <out>/<preset>/ (config.json, bf16 model.safetensors, tokenizer files,
   generation_config.json).
4. Held-out bits per byte of each exported checkpoint, reloaded and computed in f32: the first --eval-tokens
   of the held-out stream (each document preceded by eos), sliding windows of --window tokens every
   --stride, each target scored once (parcae-golf.md section 8); bytes of a target = characters of its
   byte-level token string (0 for special tokens); bpb = sum nll / (ln 2 * sum bytes). The ids scored are
   written to <out>/heldout-ids.json so the TypeScript side scores exactly the same tokens.
Results (bpb, params, steps, tokens/s, curves, samples) go to <out>/report.json.

usage (GPU, all four at once):    python3 tools/reference/train_tiny.py --parallel --steps 1500 --minutes 6
      (CPU smoke test):           python3 tools/reference/train_tiny.py --steps 20 --batch 4 --eval-tokens 2000
      (re-score exported models): python3 tools/reference/train_tiny.py --eval-only
"""
import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from phalanx_ref import build, llama, load_pretrained, save_hf
from phalanx_ref.common import logits_of
from phalanx_ref.parcae import GOLF_XIELU

PRESETS = ["spartacus", "nanohammer", "parcae", "llama"]
SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
EOS, END = 0, 3
PROMPTS = ["The jury said", "In the morning", "He was"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}<|end|>\n"
    "{% else %}<|user|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def model_config(preset, vocab, context):
    """The four tiny configs: hidden 256, tied embeddings, sized to ~2.75-2.8 M parameters each."""
    common = dict(vocab_size=vocab, hidden_size=256, tie_word_embeddings=True, bos_token_id=EOS, eos_token_id=[EOS, END])
    llama_like = dict(common, rms_norm_eps=1e-5, max_position_embeddings=context, num_attention_heads=8, head_dim=32, num_hidden_layers=3)
    if preset == "llama":
        return dict(llama_like, model_type="llama", architectures=["LlamaForCausalLM"], num_key_value_heads=4, intermediate_size=480, rope_theta=10000.0)
    if preset == "spartacus":
        return dict(llama_like, model_type="monoid", architectures=["MonoidForCausalLM"], intermediate_size=320, decay_variant="vector-logsigmoid")
    if preset == "nanohammer":
        return dict(llama_like, model_type="nanohammer", architectures=["NanoHammerForCausalLM"], num_key_value_heads=4, intermediate_size=448, rope_theta=10000.0,
                    state_dim=64, num_state_heads=4, state_cell_hidden_size=32)
    L = 5
    return dict(common, model_type="parcae", architectures=["ParcaeForCausalLM"], max_position_embeddings=context, num_hidden_layers=L, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                intermediate_size=288, rope_theta=10000.0, rope_dims=16, logit_softcap=30.0, global_attn_layers=[2, 4],
                local_window_size_early=64, local_window_size_late=128, local_window_split_layer=3, num_loops=2, loop_start=1, loop_end=2,
                parallel_start_layer=4, xsa_last_n=L, attn_out_gate_width=12, smear_gate_width=12,
                # The golf table (11 layers) resampled to L layers, keeping its depth profile.
                xielu_coefficients=[GOLF_XIELU[round(i * 10 / (L - 1))] for i in range(L)])


# ---------------------------------------------------------------- data and tokenizer


def read_docs(path):
    with open(path) as fh:
        return [d for d in fh.read().split("\n\n") if d.strip()]


def train_tokenizer(docs, out, vocab, context):
    """Byte-level BPE; the post-processor puts <|endoftext|> (bos) before every encoded text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B", special_tokens=[("<|endoftext|>", EOS)])
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[EOS],
        "eos_token": SPECIALS[EOS],
        "pad_token": SPECIALS[EOS],
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False} for i, s in enumerate(SPECIALS)},
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return tok


def stream(tok, docs):
    """Documents as one id stream, each preceded by eos (which is also bos)."""
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.append(EOS)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def token_bytes(tok):
    """Bytes each id stands for: one per character of a byte-level token string, 0 for special tokens."""
    return torch.tensor([0 if i < len(SPECIALS) else len(tok.id_to_token(i)) for i in range(tok.get_vocab_size())], dtype=torch.float64)


def prepare(args):
    """Tokenizer, id streams and the scored held-out prefix, written once under <out>/data."""
    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)
    train_docs = read_docs(os.path.join(args.data, "brown-train.txt"))
    heldout_docs = read_docs(os.path.join(args.data, "brown-heldout.txt"))
    tok = train_tokenizer(train_docs, data, args.vocab, args.context)
    # Every 20th training document is the selection split: it picks the checkpoint, the held-out split never does.
    train = stream(tok, [d for i, d in enumerate(train_docs) if i % 20 != 19])
    select = stream(tok, [d for i, d in enumerate(train_docs) if i % 20 == 19])
    heldout = stream(tok, heldout_docs)
    ids = heldout[: args.eval_tokens]
    torch.save({"train": train, "select": select, "heldout": heldout}, os.path.join(data, "ids.pt"))
    with open(os.path.join(args.out, "heldout-ids.json"), "w") as fh:
        json.dump({"window": args.window, "stride": args.stride, "ids": ids.tolist()}, fh, separators=(",", ":"))
    info = {"vocab": tok.get_vocab_size(), "train_tokens": len(train), "select_tokens": len(select), "heldout_tokens": len(heldout),
            "eval_tokens": len(ids), "eval_bytes": int(token_bytes(tok)[ids[1:]].sum())}
    print(json.dumps({"data": info}), flush=True)
    return info


# ---------------------------------------------------------------- scoring


@torch.no_grad()
def sliding_nll(model, ids, window, stride, batch=32):
    """Summed nll of ids[1:] by sliding windows (parcae-golf.md section 8, score.ts' slidingWindows):
    windows start every `stride` while start + (window - stride) < n; the first scores all its targets,
    the others their last positions from window - stride on. Returns per-target nll [n] (float64)."""
    n = len(ids) - 1
    context = window - stride
    starts = [0] + list(range(stride, n, stride))
    starts = [s for s in starts if s == 0 or s + context < n]
    nll = torch.full((n,), math.nan, dtype=torch.float64)
    device = next(model.parameters()).device
    for i in range(0, len(starts), batch):
        group = starts[i : i + batch]
        for length in sorted({min(s + window, n) - s for s in group}):  # rows of one length run together
            rows = [s for s in group if min(s + window, n) - s == length]
            x = torch.stack([ids[s : s + length] for s in rows]).to(device)
            y = torch.stack([ids[s + 1 : s + 1 + length] for s in rows]).to(device)
            out = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten(), reduction="none").view(len(rows), length).double().cpu()
            for r, s in enumerate(rows):
                first = 0 if s == 0 else context
                nll[s + first : s + length] = out[r, first:]
    assert not nll.isnan().any(), "a target was not scored"
    return nll


def bits_per_byte(model, ids, nbytes, window, stride):
    """Exact f32 (no TF32) held-out bpb of model over ids."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        nll = sliding_nll(model.eval(), ids, window, stride)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"bpb": nll.sum().item() / (math.log(2) * nbytes[ids[1:]].sum().item()), "loss": nll.mean().item(), "targets": len(nll)}


@torch.no_grad()
def mean_loss(model, ids, T, n_windows, autocast):
    """Mean next-token loss over the first n_windows non-overlapping T-token windows of ids (training curves)."""
    n = min(n_windows, (len(ids) - 1) // T)
    device = next(model.parameters()).device
    x = ids[: n * T].view(n, T).to(device)
    y = ids[1 : n * T + 1].view(n, T).to(device)
    model.eval()
    with autocast():
        loss = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten()).item()
    model.train()
    return loss


@torch.no_grad()
def samples(model, tok, n_new, seed):
    """Greedy and sampled (temperature 0.8) continuations of PROMPTS, recomputing the forward each token."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt).ids], device=device)  # with the bos the post-processor adds
        texts = {}
        for mode in ("greedy", "sampled"):
            x = ids
            for _ in range(n_new):
                logits = logits_of(model.eval(), x)[:, -1]
                nxt = logits.argmax(-1, keepdim=True) if mode == "greedy" else torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=g)
                x = torch.cat([x, nxt], 1)
                if nxt.item() in (EOS, END):
                    break
            texts[mode] = tok.decode(x[0, ids.shape[1] :].tolist(), skip_special_tokens=True)
        out.append({"prompt": prompt, **texts})
    return out


# ---------------------------------------------------------------- training


def train_one(preset, args, device):
    data = os.path.join(args.out, "data")
    tok = Tokenizer.from_file(os.path.join(data, "tokenizer.json"))
    ids = torch.load(os.path.join(data, "ids.pt"))
    train_ids = ids["train"].to(device)
    torch.manual_seed(args.seed)
    config = model_config(preset, tok.get_vocab_size(), args.context)
    model = build(config, llama_attn="sdpa")
    if preset == "llama":
        llama.init_for_training(model)
    else:
        model.init_for_training()
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    cuda = device.type == "cuda"
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    g = torch.Generator(device=device).manual_seed(args.seed)
    offsets = torch.arange(args.T + 1, device=device)

    def lr_at(frac, step):
        """Linear warmup, then cosine from lr down to lr / 10 at the end of the budget."""
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))

    curve, best = [], (math.inf, None, 0)

    def evaluate(step, loss):
        """A curve point; the weights with the lowest selection loss so far are kept."""
        nonlocal best
        point = {"step": step, "seconds": round(time.time() - start, 1), "train_loss": loss.item(),
                 "select_loss": mean_loss(model, ids["select"], args.T, args.eval_windows, autocast),
                 "heldout_loss": mean_loss(model, ids["heldout"], args.T, args.eval_windows, autocast)}
        curve.append(point)
        print(json.dumps({"preset": preset, **point}), flush=True)
        if point["select_loss"] < best[0]:
            best = (point["select_loss"], copy.deepcopy(model.state_dict()), step)

    start = time.time()
    step = 0
    while True:
        # Progress through the budget: whichever of --steps and --minutes runs out first ends training.
        frac = max(step / args.steps if args.steps else 0.0, (time.time() - start) / (60 * args.minutes) if args.minutes else 0.0)
        if frac >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(frac, step)
        rows = torch.randint(len(train_ids) - args.T - 1, (args.batch, 1), device=device, generator=g) + offsets
        batch = train_ids[rows]
        with autocast():
            loss = F.cross_entropy(logits_of(model, batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % args.eval_every == 0:
            evaluate(step, loss)
    if not curve or curve[-1]["step"] != step:
        evaluate(step, loss)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.time() - start
    model.load_state_dict(best[1])

    # Export as bf16, reload, and check the reloaded checkpoint computes what the trained model with
    # bf16-rounded weights computes: the names, tying and config on disk are right.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    out_dir = os.path.join(args.out, preset)
    shutil.rmtree(out_dir, ignore_errors=True)
    if preset == "llama":
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out_dir)
    else:
        save_hf(model, config, out_dir, torch.bfloat16)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(data, name), out_dir)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": EOS, "eos_token_id": [EOS, END], "pad_token_id": EOS, "max_new_tokens": 64}, fh, indent=2)
        fh.write("\n")
    reloaded = load_pretrained(out_dir, llama_attn="sdpa").to(device)
    probe = ids["heldout"][: 4 * args.T].view(4, args.T).to(device)
    with torch.no_grad():
        diff = (logits_of(model.eval(), probe) - logits_of(reloaded.eval(), probe)).abs().max().item()
    assert diff < 1e-3, f"{preset}: reloaded checkpoint differs from the trained model by {diff}"

    nbytes = token_bytes(tok)
    with open(os.path.join(args.out, "heldout-ids.json")) as fh:
        eval_ids = torch.tensor(json.load(fh)["ids"])
    result = {
        # train_seconds and tokens_per_second include the curve evaluations.
        "preset": preset, "params": params, "steps": step, "best_step": best[2], "train_seconds": round(seconds, 1),
        "tokens_per_second": round(step * args.batch * args.T / seconds), "epochs": round(step * args.batch * args.T / len(train_ids), 2),
        "checkpoint_bytes": os.path.getsize(os.path.join(out_dir, "model.safetensors")), "reload_max_abs_diff": diff,
        **bits_per_byte(reloaded, eval_ids, nbytes, args.window, args.stride),
        "samples": samples(reloaded, tok, args.sample_tokens, args.seed), "curve": curve, "config": config,
    }
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    with open(os.path.join(args.out, "runs", f"{preset}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({"preset": preset, "bpb": result["bpb"], "params": params, "steps": step, "best_step": best[2]}), flush=True)
    return result


def eval_only(args, device):
    """Re-scores every exported checkpoint under <out> from disk and compares with report.json."""
    with open(os.path.join(args.out, "heldout-ids.json")) as fh:
        saved = json.load(fh)
    with open(os.path.join(args.out, "report.json")) as fh:
        report = json.load(fh)
    for preset in args.presets:
        path = os.path.join(args.out, preset)
        model = load_pretrained(path, llama_attn="sdpa").to(device)
        r = bits_per_byte(model, torch.tensor(saved["ids"]), token_bytes(Tokenizer.from_file(os.path.join(path, "tokenizer.json"))), saved["window"], saved["stride"])
        was = report["models"][preset]["bpb"]
        print(json.dumps({"preset": preset, "bpb": r["bpb"], "report_bpb": was, "diff": r["bpb"] - was}), flush=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(root, ".gpu", "data"), help="folder of brown-train.txt / brown-heldout.txt (brown.mjs)")
    ap.add_argument("--out", default=os.path.join(root, ".gpu", "tiny"))
    ap.add_argument("--presets", default=",".join(PRESETS), type=lambda s: s.split(","))
    ap.add_argument("--minutes", type=float, help="training wall-clock budget per model")
    ap.add_argument("--steps", type=int, help="training step budget per model (with --minutes too, the first to run out ends training)")
    ap.add_argument("--parallel", action="store_true", help="train the presets in one process each, at the same time")
    ap.add_argument("--eval-only", action="store_true", help="re-score the exported checkpoints under --out")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--context", type=int, default=1024, help="max_position_embeddings / model_max_length written to the configs")
    ap.add_argument("--T", type=int, default=256, help="training sequence length")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100, help="steps between curve points (and checkpoint selection)")
    ap.add_argument("--eval-windows", type=int, default=32, help="T-token windows per curve point")
    ap.add_argument("--eval-tokens", type=int, default=20000, help="held-out tokens scored for bpb")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--sample-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one preset, data already prepared (set by --parallel)
    args = ap.parse_args()
    if not (args.minutes or args.steps or args.eval_only):
        ap.error("give a training budget: --minutes and/or --steps")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # training speed; scoring turns it off

    if args.eval_only:
        return eval_only(args, device)
    if args.worker:
        train_one(args.worker, args, device)
        return
    info = prepare(args)
    if args.parallel:
        argv = [a for a in sys.argv[1:] if a != "--parallel"]
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv, "--worker", p]) for p in args.presets]
        if any(p.wait() for p in procs):
            raise SystemExit("a training worker failed")
        results = {}
        for p in args.presets:
            with open(os.path.join(args.out, "runs", f"{p}.json")) as fh:
                results[p] = json.load(fh)
    else:
        results = {p: train_one(p, args, device) for p in args.presets}
    with open(os.path.join(args.data, "brown.json")) as fh:
        corpus = json.load(fh)
    report = {
        "reference": f"tools/reference/train_tiny.py (torch {torch.__version__}, transformers {transformers.__version__})",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "eval_only", "data", "out")},
        "corpus": corpus, "data": info,
        "eval": {"window": args.window, "stride": args.stride, "ids": "heldout-ids.json", "bytes": "characters of the byte-level token string, 0 for special tokens"},
        "models": results,
    }
    with open(os.path.join(args.out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    for p, r in sorted(results.items(), key=lambda kv: kv[1]["bpb"]):
        print(f"{p:11s} bpb {r['bpb']:.4f}  params {r['params']:,}  steps {r['steps']} (best {r['best_step']})  {r['tokens_per_second']:,} tok/s")


if __name__ == "__main__":
    main()
