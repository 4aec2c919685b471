"""PyTorch side of the GPU training benchmark (`scripts/gpu-check.sh`, part 2).

Trains `transformers.BertForSequenceClassification` loaded from MODEL_DIR (the same randomly
initialised weights pipe fine-tunes) on the rows and batches `pipe`'s `fine-tune` uses
(`BATCHES_DIR/batches.json` and `BATCHES_DIR/tensors/`, written by
`target/debug/examples/gpu_batches`): the same rows, batch order and dynamic padding,
AdamW (weight decay 0.01 except biases and LayerNorm, eps 1e-6), linear warm-up and decay,
gradient clipping at 1.0, eager mode, in f32 or under `torch.autocast(bfloat16)`.

    python3 steps/benches/train_gpu_python.py MODEL_DIR BATCHES_DIR --precision bf16 [--epochs 2]

Prints one JSON line: samples/s per epoch (device-synchronised wall time of the training loop,
each batch padded on the host beforehand and copied to the GPU inside the loop, as pipe copies
its batches), the achieved matrix TFLOP/s and the token counts. The first epoch
includes warm-up (cuBLAS heuristics, the caching allocator filling): compare later epochs.
Also makes the random models: `python3 train_gpu_python.py --make-model DIR --shape base|mini`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = {
    # bert-base with multilingual BERT's vocabulary (the shape), and mini.
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, vocab_size=119547),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, vocab_size=16000),
    # For scripts/gpu-check.sh --cpu-dry on a machine without PyTorch.
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512, vocab_size=16000),
}


def make_model_numpy(out: Path, shape: str) -> None:
    """A randomly initialised BertForSequenceClassification directory written with numpy alone
    (normal(0, 0.02) weights, LayerNorm 1 and 0, biases 0), for machines without PyTorch."""
    from safetensors.numpy import save_file

    c = dict(SHAPES[shape], max_position_embeddings=128, type_vocab_size=2)
    h, i, rng = c["hidden_size"], c["intermediate_size"], np.random.default_rng(42)
    normal = lambda *dims: rng.normal(0.0, 0.02, dims).astype(np.float32)  # noqa: E731
    t = {
        "bert.embeddings.word_embeddings.weight": normal(c["vocab_size"], h),
        "bert.embeddings.position_embeddings.weight": normal(128, h),
        "bert.embeddings.token_type_embeddings.weight": normal(2, h),
        "bert.embeddings.LayerNorm.weight": np.ones(h, np.float32),
        "bert.embeddings.LayerNorm.bias": np.zeros(h, np.float32),
        "bert.pooler.dense.weight": normal(h, h),
        "bert.pooler.dense.bias": np.zeros(h, np.float32),
        "classifier.weight": normal(2, h),
        "classifier.bias": np.zeros(2, np.float32),
    }
    for n in range(c["num_hidden_layers"]):
        p = f"bert.encoder.layer.{n}"
        dense = {
            "attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
            "attention.output.dense": (h, h), "intermediate.dense": (i, h), "output.dense": (h, i),
        }
        for name, (o, k) in dense.items():
            t[f"{p}.{name}.weight"], t[f"{p}.{name}.bias"] = normal(o, k), np.zeros(o, np.float32)
        for name in ["attention.output.LayerNorm", "output.LayerNorm"]:
            t[f"{p}.{name}.weight"], t[f"{p}.{name}.bias"] = np.ones(h, np.float32), np.zeros(h, np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(t, str(out / "model.safetensors"))
    config = dict(c, model_type="bert", hidden_act="gelu", id2label={"0": "0", "1": "1"}, label2id={"0": 0, "1": 1})
    (out / "config.json").write_text(json.dumps(config, indent=1))
    print(json.dumps({"model": str(out), "shape": shape, "parameters": int(sum(v.size for v in t.values())), "by": "numpy"}))


def make_model(out: Path, shape: str) -> None:
    try:
        import torch
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError:
        return make_model_numpy(out, shape)

    torch.manual_seed(42)
    config = BertConfig(**SHAPES[shape], max_position_embeddings=128, num_labels=2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(out), safe_serialization=True)
    print(json.dumps({"model": str(out), "shape": shape, "parameters": sum(p.numel() for p in model.parameters())}))


def matmul_flops(config, lengths_per_batch) -> float:
    """Training FLOPs of the matrix products (forward + 2x backward) for batches of (rows, len)."""
    h, i, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for rows, length in lengths_per_batch:
        tokens = rows * length
        dense = 2 * tokens * n_layers * (4 * h * h + 2 * h * i)
        attention = 2 * 2 * rows * length * length * h * n_layers
        head = 2 * rows * (h * h + h * 2)
        total += 3 * (dense + attention + head)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("batches_dir", nargs="?")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="bf16")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--make-model")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="base")
    ap.add_argument("--label", help="the shape's name in the result (default: the --shape)")
    args = ap.parse_args()
    if args.make_model:
        make_model(Path(args.make_model), args.shape)
        return

    import torch
    from safetensors.numpy import load_file
    from transformers import BertForSequenceClassification

    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # pipe's f32 products are plain f32 (no TF32)
    torch.backends.cudnn.allow_tf32 = False
    work = Path(args.batches_dir)
    spec = json.loads((work / "batches.json").read_text())
    t = load_file(str(work / "tensors" / "tensors.safetensors"))
    ids, types, offsets = t["input_ids"].astype(np.int64), t["token_type_ids"].astype(np.int64), t["offsets"]
    valid, labels = t["valid_length"], t["labels"]
    label_values = sorted(set(labels.tolist()))
    classes = np.array([label_values.index(v) for v in labels.tolist()])

    def batch(rows):
        rows = np.array(rows)
        length = int(max(valid[r] for r in rows))
        x = np.zeros((len(rows), length), dtype=np.int64)
        ty = np.zeros_like(x)
        m = np.zeros_like(x)
        for k, r in enumerate(rows):
            n = int(valid[r])
            x[k, :n] = ids[offsets[r]:offsets[r] + n]
            ty[k, :n] = types[offsets[r]:offsets[r] + n]
            m[k, :n] = 1
        tensors = [torch.from_numpy(a) for a in (x, ty, m, classes[rows])]
        return tensors, (len(rows), length)

    model = BertForSequenceClassification.from_pretrained(args.model_dir, num_labels=2).to(dev)
    model.train()
    named = list(model.named_parameters())
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5, eps=1e-6
    )
    epochs = [[batch(rows) for rows in spec["epochs"][e % len(spec["epochs"])]] for e in range(args.epochs)]
    total = sum(len(e) for e in epochs)
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    results = []
    for e, batches in enumerate(epochs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        for host, _ in batches:
            x, ty, m, y = (a.to(dev) for a in host)
            with autocast:
                out = model(input_ids=x, token_type_ids=ty, attention_mask=m, labels=y)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss_sum += out.loss.detach()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        samples = sum(s[0] for _, s in batches)
        flops = matmul_flops(model.config, [s for _, s in batches])
        results.append(
            {
                "epoch": e + 1,
                "seconds": seconds,
                "samples_per_second": samples / seconds,
                "matmul_tflops": flops / seconds / 1e12,
                "mean_loss": float(loss_sum) / len(batches),
                "tokens": sum(r * l for _, (r, l) in batches),
            }
        )
        print(f"torch {args.precision} epoch {e + 1}: {samples / seconds:.1f} samples/s", file=sys.stderr)
    print(
        json.dumps(
            {
                "side": "pytorch",
                "shape": args.label or args.shape,
                "torch": torch.__version__,
                "precision": args.precision,
                "model": args.model_dir,
                "parameters": sum(p.numel() for p in model.parameters()),
                "epochs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
