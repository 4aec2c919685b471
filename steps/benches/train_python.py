"""PyTorch counterpart of `target/debug/examples/bench_train`.

Trains `transformers.BertForSequenceClassification` with the same configs, the same rows and
the same batch order (dynamic padding) that the Rust benchmark left in WORK_DIR, with AdamW,
a linear schedule and gradient clipping, and prints samples/s (median of 3 epochs).

    OMP_WAIT_POLICY=PASSIVE python steps/benches/train_python.py WORK_DIR [THREADS]

Needs torch, transformers, safetensors, numpy (from PyPI).
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import BertConfig, BertForSequenceClassification


def main() -> None:
    work = Path(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    tensors = load_file(str(work / "subset" / "tensors.safetensors"))
    ids, types, offsets = tensors["input_ids"].astype(np.int64), tensors["token_type_ids"].astype(np.int64), tensors["offsets"]
    valid, labels = tensors["valid_length"], tensors["labels"]
    label_values = sorted(set(labels.tolist()))
    classes = np.array([label_values.index(v) for v in labels.tolist()])
    print(f"torch {torch.__version__}, threads {threads}, rows {len(valid)}")

    def batch(rows):
        length = int(max(valid[r] for r in rows))
        x = np.zeros((len(rows), length), dtype=np.int64)
        t = np.zeros_like(x)
        m = np.zeros_like(x)
        for k, r in enumerate(rows):
            n = int(valid[r])
            x[k, :n] = ids[offsets[r]:offsets[r] + n]
            t[k, :n] = types[offsets[r]:offsets[r] + n]
            m[k, :n] = 1
        return torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(m), torch.from_numpy(classes[rows])

    for name in ["tiny", "mini"]:
        spec = json.loads((work / f"batches-{name}.json").read_text())
        c = spec["config"]
        config = BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"], num_labels=2,
        )
        model = BertForSequenceClassification(config)
        model.train()
        decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5, eps=1e-6)
        batches = [batch(np.array(rows)) for rows in spec["batches"]]
        total = len(batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / max(1, int(0.1 * total)), max(0.0, (total - s) / max(1, total - int(0.1 * total))))
        )
        rates = []
        for epoch in range(3):
            samples = 0
            start = time.perf_counter()
            for x, t, m, y in batches:
                out = model(input_ids=x, token_type_ids=t, attention_mask=m, labels=y)
                optimizer.zero_grad()
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                samples += len(y)
            rate = samples / (time.perf_counter() - start)
            print(f"{name}: epoch {epoch + 1}: {rate:.1f} samples/s")
            rates.append(rate)
        print(f"{name}: median of 3: {statistics.median(rates):.1f} samples/s")


if __name__ == "__main__":
    main()
