"""Checks a model written by `fine-tune` in Hugging Face `transformers`, from raw text as a user
would, against pipe's `predict` step on the same rows, for each task.

    python steps/tests/reference/hf_predict.py MODEL_DIR PREDICTIONS_CSV --labels a,b,c
        [--task single_label|multi_label|regression] [--threshold P]
        [--text-column text] [--text-b-column text_b]

PREDICTIONS_CSV is the `predictions` output of a `predict` step (CSV: the input's columns, then
`predicted`, `probability`, `p_<label>...` for single_label; `predicted` (a JSON list of names),
`p_<label>...` for multi_label; `predicted` (the value) for regression). Always checked (no torch
needed): `config.json` loads with `AutoConfig`, its `id2label`/`label2id` are the names given by
--labels, in order, and its `problem_type` is the task's (absent or single_label_classification,
multi_label_classification, regression with num_labels 1). With torch installed, also:

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)
    logits = model(**tok(texts[, texts_b], truncation=True, padding=True, return_tensors="pt")).logits

and softmax(logits) (single_label), sigmoid(logits) (multi_label) or logits (regression) equals
pipe's columns (largest difference at most --tolerance, default 1e-4); a multi-label `predicted`
is the classes at or over --threshold; and `pipeline("text-classification", model=MODEL_DIR,
top_k=None)` returns the names with the same scores (it applies the activation `problem_type`
says). Prints `OK: ...` lines; exits 1 on a difference. Without torch it prints `SKIP torch`
after the config check (CI installs no torch).
"""

import argparse
import csv
import json
import sys

PROBLEM_TYPES = {
    "single_label": (None, "single_label_classification"),
    "multi_label": ("multi_label_classification",),
    "regression": ("regression",),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("predictions")
    p.add_argument("--labels", required=True, help="the class names, comma separated, in class order")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-b-column")
    p.add_argument("--task", default="single_label", choices=sorted(PROBLEM_TYPES))
    p.add_argument(
        "--threshold", type=float, help="default: the model's config.multi_label_threshold (multi_label), else 0.5"
    )
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
    if config.problem_type not in PROBLEM_TYPES[args.task]:
        print(f"FAIL: problem_type is {config.problem_type!r}, expected one of {PROBLEM_TYPES[args.task]}")
        return 1
    if args.task == "regression" and config.num_labels != 1:
        print(f"FAIL: a regression model has num_labels {config.num_labels}, expected 1")
        return 1
    print(f"OK: config id2label {labels}, problem_type {config.problem_type}")
    if args.task == "multi_label":
        stored = getattr(config, "multi_label_threshold", None)
        if not (isinstance(stored, (int, float)) and 0 < stored < 1):
            print(f"FAIL: config.multi_label_threshold is {stored!r}, expected the threshold fine-tune used")
            return 1
        print(f"OK: config.multi_label_threshold {stored}")
        if args.threshold is None:
            args.threshold = stored
    if args.threshold is None:
        args.threshold = 0.5

    with open(args.predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["predicted"] if args.task == "regression" else [f"p_{name}" for name in labels]
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        print(f"FAIL: {args.predictions} lacks the columns {missing}")
        return 1
    texts = [r[args.text_column] for r in rows]
    texts_b = [r[args.text_b_column] for r in rows] if args.text_b_column else None

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
        enc = tok(texts, texts_b, truncation=True, padding=True, return_tensors="pt")
        logits = model(**enc).logits.double()
        if args.task == "single_label":
            theirs = torch.softmax(logits, dim=-1).numpy()
        elif args.task == "multi_label":
            theirs = torch.sigmoid(logits).numpy()
        else:
            theirs = logits.numpy()
    worst = float(np.abs(theirs - ours).max())
    if args.task == "single_label":
        agree = sum(labels[int(t.argmax())] == r["predicted"] for t, r in zip(theirs, rows))
    elif args.task == "multi_label":
        agree = sum([l for l, p in zip(labels, t) if p >= args.threshold] == json.loads(r["predicted"])
                    for t, r in zip(theirs, rows))
    else:
        agree = sum(abs(t[0] - float(r["predicted"])) <= args.tolerance for t, r in zip(theirs, rows))
    print(f"OK: {len(rows)} rows from raw text: largest difference {worst:.2e}; "
          f"predicted agrees on {agree} of {len(rows)}")
    if worst > args.tolerance:
        print(f"FAIL: the difference exceeds {args.tolerance}")
        return 1
    if args.task == "multi_label" and agree < len(rows):
        # A probability within the tolerance of the threshold may fall on either side.
        close = sum(bool(np.any(np.abs(t - args.threshold) <= args.tolerance)) for t in theirs)
        if agree + close < len(rows):
            print("FAIL: the classes over the threshold differ")
            return 1

    clf = pipeline("text-classification", model=args.model_dir, top_k=None)
    inputs = [{"text": a, "text_pair": b} for a, b in zip(texts, texts_b)] if texts_b else texts
    out = clf(inputs, truncation=True)
    worst = 0.0
    for r, scores in zip(rows, out):
        names = sorted(s["label"] for s in scores)
        if names != sorted(labels):
            print(f"FAIL: pipeline returned the labels {names}, expected {sorted(labels)}")
            return 1
        for s in scores:
            mine = float(r["predicted"]) if args.task == "regression" else float(r[f"p_{s['label']}"])
            worst = max(worst, abs(s["score"] - mine))
        if args.task == "single_label":
            top = max(scores, key=lambda s: s["score"])["label"]
            if top != r["predicted"] and abs(float(r["probability"]) - max(s["score"] for s in scores)) > args.tolerance:
                print(f"FAIL: pipeline predicts {top} where pipe predicts {r['predicted']}")
                return 1
    print(f"OK: pipeline returns the names with pipe's scores; largest score difference {worst:.2e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
