#!/usr/bin/env python3
"""make_shape_model.py - writes a random-weight GGUF with the SHAPE of a real model, for speed
measurements only (its text is noise): by default Qwen2.5-0.5B / DeepSeek-R1-Distill-Qwen's
small sibling (qwen2: 24 layers, n_embd 896, 14 heads, 2 KV heads, n_ff 4864, tied embeddings),
every matrix Q4_0, with the real DeepSeek-R1-Distill-Qwen tokenizer and chat template copied from
../shared/data/tokenizer/ggml-vocab-deepseek-r1-qwen.gguf. Standard library only.

  python3 bench/make_shape_model.py OUT.gguf [--layers 24 --embd 896 --heads 14 --kv-heads 2
                                              --ff 4864] [--vocab-gguf FILE]
"""
import argparse
import os
import pathlib
import random
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("PORTA_SHARED", ROOT.parent / "shared" / "data"))

T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64 = 4, 5, 6, 7, 8, 9, 10
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
Q4_0, F32 = 2, 0
ALIGN = 32


def read_tokenizer_kvs(path):
    """The raw bytes of every tokenizer.* key/value of a GGUF file (copied as they are)."""
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF", path
    version, n_t, n_kv = struct.unpack_from("<IQQ", b, 4)
    assert version in (2, 3)
    off = 24
    out = []

    def skip_value(t, off):
        if t in SCALAR:
            return off + SCALAR[t]
        if t == T_STR:
            (n,) = struct.unpack_from("<Q", b, off)
            return off + 8 + n
        if t == T_ARR:
            et, n = struct.unpack_from("<IQ", b, off)
            off += 12
            if et in SCALAR:
                return off + SCALAR[et] * n
            for _ in range(n):
                off = skip_value(et, off)
            return off
        raise ValueError(f"GGUF type {t}")

    for _ in range(n_kv):
        start = off
        (kl,) = struct.unpack_from("<Q", b, off)
        key = b[off + 8:off + 8 + kl].decode()
        off += 8 + kl
        (t,) = struct.unpack_from("<I", b, off)
        off = skip_value(t, off + 4)
        if key.startswith("tokenizer."):
            out.append((key, b[start:off]))
        if key == "tokenizer.ggml.tokens":
            n_vocab = struct.unpack_from("<Q", b, start + 8 + kl + 8)[0]
    return out, n_vocab


def s(x):
    x = x.encode()
    return struct.pack("<Q", len(x)) + x


def kv(key, t, v):
    fmt = {T_U32: "<I", T_I32: "<i", T_F32: "<f", T_BOOL: "<?", T_U64: "<Q"}
    body = s(v) if t == T_STR else struct.pack(fmt[t], v)
    return s(key) + struct.pack("<I", t) + body


def q4_0_row(n_cols, rng):
    """One Q4_0 row: blocks of (f16 scale 0.02, 16 bytes of random nibbles)."""
    d = struct.pack("<e", 0.02)
    return b"".join(d + rng.randbytes(16) for _ in range(n_cols // 32))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--embd", type=int, default=896)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=4864)
    ap.add_argument("--vocab-gguf", default=str(SHARED / "tokenizer" / "ggml-vocab-deepseek-r1-qwen.gguf"))
    a = ap.parse_args()
    tok_kvs, n_vocab = read_tokenizer_kvs(a.vocab_gguf)
    hd = a.embd // a.heads
    rng = random.Random(7)
    kvs = [kv("general.architecture", T_STR, "qwen2"),
           kv("general.name", T_STR, f"porta-shape-qwen2-{a.layers}x{a.embd}"),
           kv("general.file_type", T_U32, 2),
           kv("general.alignment", T_U32, ALIGN),
           kv("qwen2.context_length", T_U32, 32768),
           kv("qwen2.embedding_length", T_U32, a.embd),
           kv("qwen2.block_count", T_U32, a.layers),
           kv("qwen2.feed_forward_length", T_U32, a.ff),
           kv("qwen2.attention.head_count", T_U32, a.heads),
           kv("qwen2.attention.head_count_kv", T_U32, a.kv_heads),
           kv("qwen2.rope.freq_base", T_F32, 1000000.0),
           kv("qwen2.attention.layer_norm_rms_epsilon", T_F32, 1e-6)] + [r for _, r in tok_kvs]
    # (name, n_cols, n_rows or 0 for 1-D, kind)
    tensors = [("token_embd.weight", a.embd, n_vocab, "q"), ("output_norm.weight", a.embd, 0, "one")]
    for i in range(a.layers):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", a.embd, 0, "one"),
                    (p + "attn_q.weight", a.embd, a.heads * hd, "q"),
                    (p + "attn_k.weight", a.embd, a.kv_heads * hd, "q"),
                    (p + "attn_v.weight", a.embd, a.kv_heads * hd, "q"),
                    (p + "attn_q.bias", a.heads * hd, 0, "zero"),
                    (p + "attn_k.bias", a.kv_heads * hd, 0, "zero"),
                    (p + "attn_v.bias", a.kv_heads * hd, 0, "zero"),
                    (p + "attn_output.weight", a.heads * hd, a.embd, "q"),
                    (p + "ffn_norm.weight", a.embd, 0, "one"),
                    (p + "ffn_gate.weight", a.embd, a.ff, "q"),
                    (p + "ffn_up.weight", a.embd, a.ff, "q"),
                    (p + "ffn_down.weight", a.ff, a.embd, "q")]
    infos, off, sizes = [], 0, []
    for name, cols, rows, kind in tensors:
        if kind == "q":
            size = rows * cols // 32 * 18
            infos.append(s(name) + struct.pack("<IQQIQ", 2, cols, rows, Q4_0, off))
        else:
            size = cols * 4
            infos.append(s(name) + struct.pack("<IQIQ", 1, cols, F32, off))
        sizes.append(size)
        off += (size + ALIGN - 1) // ALIGN * ALIGN
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    with open(a.out + ".part", "wb") as f:
        f.write(head + b"\0" * (-len(head) % ALIGN))
        for (name, cols, rows, kind), size in zip(tensors, sizes):
            if kind == "q":
                row = q4_0_row(cols, rng)
                f.write(row * rows)  # one random row repeated: the speed does not care
            else:
                f.write(struct.pack("<f", 1.0 if kind == "one" else 0.0) * cols)
            f.write(b"\0" * (-size % ALIGN))
    os.replace(a.out + ".part", a.out)
    n_params = sum(c * max(r, 1) for _, c, r, _ in tensors)
    print(f"{a.out}: qwen2 {a.layers} layers, n_embd {a.embd}, vocab {n_vocab}, "
          f"{n_params / 1e6:.0f} M parameters, {os.path.getsize(a.out) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
