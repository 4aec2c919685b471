"""Checks that a model written by `fine-tune` loads in Hugging Face `transformers` and gives the
same outputs as `pipe`'s own `evaluate` step.

    python steps/tests/reference/hf_logits.py MODEL_DIR TENSOR_SET_DIR PREDICTIONS_CSV [ROWS]

MODEL_DIR is a `fine-tune` step's `model` output, TENSOR_SET_DIR a `tokenize` output
(`tensors`), PREDICTIONS_CSV the `predictions` output of `evaluate` run on that tensor set
(`pipe status --json` and the cache's `steps/<key>/out/` give the paths). The model is loaded with
`BertForSequenceClassification.from_pretrained`, run on the first ROWS rows (default 2000), and
its softmax probabilities are compared with the `p_<label>` columns. Exits 1 when the largest
difference exceeds 1e-4. Needs torch, transformers, safetensors, numpy (from PyPI).
"""

import csv
import sys

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoTokenizer, BertForSequenceClassification


def main() -> int:
    model_dir, set_dir, predictions = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    model = BertForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    AutoTokenizer.from_pretrained(model_dir)  # the tokenizer ships with the model and loads
    t = load_file(f"{set_dir}/tensors.safetensors")
    ids, types, offsets, valid = t["input_ids"], t["token_type_ids"], t["offsets"], t["valid_length"]
    with open(predictions, newline="") as f:
        table = list(csv.DictReader(f))
    columns = [c for c in table[0] if c.startswith("p_")]
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert columns == [f"p_{label}" for label in labels], (columns, labels)
    ours = {int(r["row"]): np.array([float(r[c]) for c in columns]) for r in table}
    worst, n = 0.0, min(rows, len(valid))
    with torch.no_grad():
        for start in range(0, n, 64):
            batch = range(start, min(n, start + 64))
            length = int(max(valid[r] for r in batch))
            x = np.zeros((len(batch), length), dtype=np.int64)
            y = np.zeros_like(x)
            m = np.zeros_like(x)
            for k, r in enumerate(batch):
                v = int(valid[r])
                x[k, :v] = ids[offsets[r]:offsets[r] + v]
                y[k, :v] = types[offsets[r]:offsets[r] + v]
                m[k, :v] = 1
            logits = model(input_ids=torch.from_numpy(x), token_type_ids=torch.from_numpy(y), attention_mask=torch.from_numpy(m)).logits
            probs = torch.softmax(logits.double(), dim=-1).numpy()
            for k, r in enumerate(batch):
                worst = max(worst, float(np.abs(probs[k] - ours[r]).max()))
    print(f"transformers loaded {model_dir}: {model.config.num_hidden_layers} layers, labels {labels}")
    print(f"largest probability difference over {n} rows: {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
