"""scikit-learn side of the `linear` benchmark (see steps/BENCHMARKS_LINEAR.md).

Does what the `linear` step does with its defaults, with scikit-learn: read the
tables (tab-separated, quoting off, as the step reads them), TF-IDF of word
1-2-grams (default token_pattern) and character 1-3-grams (analyzer='char'),
sublinear tf, smooth idf, each block L2-normalised, stacked side by side; then
LogisticRegression (lbfgs, C=1.0, max_iter=100, tol=1e-4 unless given) on the
training rows, accuracy on the test rows. One run; prints seconds per phase.

    /work/venv/bin/pip install scikit-learn
    /work/venv/bin/python steps/benches/linear_python.py NSMC_DIR [--C 1.0] [--max-iter 100] [--tol 1e-4]
        [--analyzer char|char_wb] [--min-df 1]
"""

import argparse
import os
import time

import numpy as np
import scipy.sparse
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression


def read_table(path):
    """Fields split on tabs only (NSMC has raw `"` runs), one header line."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    col, lab = header.index("document"), header.index("label")
    docs, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SystemExit(f"{path} line {number}: {len(fields)} fields, the header has {len(header)}")
        docs.append(fields[col])
        labels.append(int(fields[lab]))
    return docs, np.array(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("nsmc_dir")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--analyzer", default="char", choices=["char", "char_wb"])
    ap.add_argument("--min-df", type=int, default=1)
    args = ap.parse_args()

    start = time.perf_counter()
    train, y_train = read_table(os.path.join(args.nsmc_dir, "ratings_train.txt"))
    test, y_test = read_table(os.path.join(args.nsmc_dir, "ratings_test.txt"))
    read_s = time.perf_counter() - start

    t = time.perf_counter()
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=args.min_df)
    chars = TfidfVectorizer(analyzer=args.analyzer, ngram_range=(1, 3), sublinear_tf=True, min_df=args.min_df)
    x_train = scipy.sparse.hstack([words.fit_transform(train), chars.fit_transform(train)]).tocsr()
    features_s = time.perf_counter() - t

    t = time.perf_counter()
    model = LogisticRegression(C=args.C, max_iter=args.max_iter, tol=args.tol).fit(x_train, y_train)
    fit_s = time.perf_counter() - t

    t = time.perf_counter()
    x_test = scipy.sparse.hstack([words.transform(test), chars.transform(test)]).tocsr()
    accuracy = float((model.predict(x_test) == y_test).mean())
    predict_s = time.perf_counter() - t
    total_s = time.perf_counter() - start

    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(
        f"features: {x_train.shape[1]} ({len(words.vocabulary_)} word + {len(chars.vocabulary_)} char), "
        f"{x_train.nnz} non-zeros"
    )
    print(f"lbfgs iterations: {int(model.n_iter_[0])} (max_iter {args.max_iter}, tol {args.tol}, C {args.C})")
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} rows)")
    print(
        f"seconds: read {read_s:.1f}, features {features_s:.1f}, fit {fit_s:.1f}, "
        f"test features + predict {predict_s:.1f}, total {total_s:.1f}"
    )


if __name__ == "__main__":
    main()
