"""Checks that a model written by `fine-tune` gives, in Hugging Face `transformers`, the class
probabilities of pipe's own `evaluate` step, starting from the raw text as a user would.

    python steps/tests/reference/hf_logits.py MODEL_DIR TABLE PREDICTIONS_CSV [options]

MODEL_DIR is a `fine-tune` step's `model` output; TABLE the text table that the evaluated tensor
set was tokenized from; PREDICTIONS_CSV the `predictions` output of `evaluate` on that tensor set
(`row,label,predicted,p_<label>...`, one line per tensor-set row; `pipe status --json` and the
cache's `steps/<key>/out/` give the paths). The options repeat the `tokenize` parameters used for
that set (--text-column, --text-b-column, --label-column, --separator, --empty, --malformed; the
defaults are tokenize's), so the table's rows line up with the predictions' rows; the labels are
compared to make sure they do.

The first --rows rows (default 2000) are tokenized and run as a user would:

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)
    probs = softmax(model(**tok(texts, truncation=True, padding=True, return_tensors="pt")).logits)

(truncation to the tokenizer's model_max_length, the max_len the model was trained with; give
--max-length when the evaluated set was tokenized with another max_len). The probabilities are
compared with the `p_<label>` columns; exits 1 when the largest difference exceeds --tolerance
(default 1e-4) or the rows do not line up. Needs torch, transformers, numpy (from PyPI).
steps/tests/reference/hf_tokenizer_ids.py (which this script shares its table reader with) checks
the tokenization alone, without torch.
"""

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_tokenizer_ids import read_rows  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("table")
    p.add_argument("predictions")
    p.add_argument("--text-column", default="document")
    p.add_argument("--text-b-column", default=None)
    p.add_argument("--label-column", default="label", help='"" for unlabelled text')
    p.add_argument("--separator", default="\t", help="a tab (default) or ','")
    p.add_argument("--empty", choices=["keep", "drop", "error"], default="keep")
    p.add_argument("--malformed", choices=["drop", "error"], default="error")
    p.add_argument("--rows", type=int, default=2000, help="rows to check, from the first")
    p.add_argument("--max-length", type=int, default=None, help="default: the tokenizer's model_max_length")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()
    separator = {"\\t": "\t", "tab": "\t", "comma": ","}.get(args.separator, args.separator)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    table_rows = read_rows(args.table, args.text_column, args.text_b_column, args.label_column or None,
                           separator, args.empty, args.malformed)
    with open(args.predictions, newline="") as f:
        predictions = list(csv.DictReader(f))
    if len(predictions) != len(table_rows):
        print(f"FAIL: {args.predictions} has {len(predictions)} rows, {args.table} gives {len(table_rows)}; "
              "give the table and the --empty / --malformed / column options the evaluated set was tokenized with")
        return 1
    if [int(r["row"]) for r in predictions] != list(range(len(predictions))):
        print(f"FAIL: {args.predictions}: the `row` column is not 0, 1, 2, ...")
        return 1
    if args.label_column and any(int(r["label"]) != t[3] for r, t in zip(predictions, table_rows)):
        print("FAIL: the table's labels differ from the predictions' `label` column: the rows do not line up")
        return 1

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir)
    model.eval()
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    columns = [c for c in predictions[0] if c.startswith("p_")]
    if columns != [f"p_{label}" for label in labels]:
        print(f"FAIL: the predictions' columns {columns} are not the model's labels {labels}")
        return 1
    max_length = args.max_length or tok.model_max_length

    n = min(args.rows, len(table_rows))
    worst, worst_row, agree = 0.0, None, 0
    with torch.no_grad():
        for start in range(0, n, args.batch_size):
            batch = table_rows[start:min(n, start + args.batch_size)]
            a = [r[1] for r in batch]
            b = [r[2] for r in batch] if args.text_b_column else None
            enc = tok(a, b, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            probs = torch.softmax(model(**enc).logits.double(), dim=-1).numpy()
            for k in range(len(batch)):
                row = start + k
                ours = np.array([float(predictions[row][c]) for c in columns])
                diff = float(np.abs(probs[k] - ours).max())
                if diff > worst:
                    worst, worst_row = diff, row
                agree += int(labels[int(probs[k].argmax())] == predictions[row]["predicted"])

    print(f"transformers loaded {args.model_dir}: {type(tok).__name__} (max_length {max_length}), "
          f"{model.config.num_hidden_layers} layers, labels {labels}")
    print(f"{n} rows from raw text: largest probability difference {worst:.2e}"
          + (f" (row {worst_row}, line {table_rows[worst_row][0]})" if worst_row is not None else "")
          + f"; predicted label agrees on {agree} of {n}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
