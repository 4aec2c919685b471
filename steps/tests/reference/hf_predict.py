"""Checks a model written by `fine-tune` on string labels in Hugging Face `transformers`, from
raw text as a user would, against pipe's `predict` step on the same rows.

    python steps/tests/reference/hf_predict.py MODEL_DIR PREDICTIONS_CSV --labels a,b,c [--text-column text]

PREDICTIONS_CSV is the `predictions` output of a `predict` step (CSV: the input's columns, then
`predicted`, `probability`, `p_<label>...`). Always checked (no torch needed): `config.json` loads
with `AutoConfig` and its `id2label`/`label2id` are the class names given by --labels, in order.
With torch installed, also:

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)
    softmax(model(**tok(texts, truncation=True, padding=True, return_tensors="pt")).logits)

equals the `p_<label>` columns (largest difference at most --tolerance, default 1e-4), and
`pipeline("text-classification", model=MODEL_DIR, top_k=None)` returns the class names with the
same scores. Prints `OK: ...` lines; exits 1 on a difference. Without torch it prints
`SKIP torch` after the config check (CI installs no torch).
"""

import argparse
import csv
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("predictions")
    p.add_argument("--labels", required=True, help="the class names, comma separated, in class order")
    p.add_argument("--text-column", default="text")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()
    want = args.labels.split(",")

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model_dir)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if labels != want:
        print(f"FAIL: id2label is {labels}, expected {want}")
        return 1
    if config.label2id != {name: i for i, name in enumerate(want)}:
        print(f"FAIL: label2id is {config.label2id}")
        return 1
    print(f"OK: config id2label {labels}")

    with open(args.predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [f"p_{name}" for name in labels]
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        print(f"FAIL: {args.predictions} lacks the columns {missing}")
        return 1
    texts = [r[args.text_column] for r in rows]

    try:
        import torch
    except ImportError:
        print("SKIP torch: not installed, so the model's probabilities are not compared")
        return 0
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir)
    model.eval()
    ours = np.array([[float(r[c]) for c in columns] for r in rows])
    with torch.no_grad():
        enc = tok(texts, truncation=True, padding=True, return_tensors="pt")
        theirs = torch.softmax(model(**enc).logits.double(), dim=-1).numpy()
    worst = float(np.abs(theirs - ours).max())
    agree = sum(labels[int(t.argmax())] == r["predicted"] for t, r in zip(theirs, rows))
    print(f"OK: {len(rows)} rows from raw text: largest probability difference {worst:.2e}; "
          f"predicted label agrees on {agree} of {len(rows)}")
    if worst > args.tolerance:
        print(f"FAIL: the difference exceeds {args.tolerance}")
        return 1

    clf = pipeline("text-classification", model=args.model_dir, top_k=None)
    out = clf(texts, truncation=True)
    worst = 0.0
    for r, scores in zip(rows, out):
        names = sorted(s["label"] for s in scores)
        if names != sorted(labels):
            print(f"FAIL: pipeline returned the labels {names}, expected {sorted(labels)}")
            return 1
        for s in scores:
            worst = max(worst, abs(s["score"] - float(r[f"p_{s['label']}"])))
        top = max(scores, key=lambda s: s["score"])["label"]
        if top != r["predicted"] and abs(float(r["probability"]) - max(s["score"] for s in scores)) > args.tolerance:
            print(f"FAIL: pipeline predicts {top} where pipe predicts {r['predicted']}")
            return 1
    print(f"OK: pipeline returns the class names; largest score difference {worst:.2e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
