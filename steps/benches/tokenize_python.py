"""Python side of the tokenize benchmark (see steps/BENCHMARKS_TEXT.md).

Does what the `tokenize` step does, with the Python `tokenizers` library:
read the table (tab-separated, quoting off), encode every review with
`encode_batch` (Rust, all cores), truncate and add [CLS]/[SEP] with the
library's own truncation and template, and collect ids, token types and
valid lengths. Median of 3 runs.

    pip install tokenizers
    python3 steps/benches/tokenize_python.py WORK_DIR/nsmc_all.tsv WORK_DIR/tokenizer.json
"""

import os
import statistics
import sys
import time

import tokenizers
from tokenizers import Tokenizer

REPEATS = 3
MAX_LEN = 64


def read_table(path):
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        col, lab = header.index("document"), header.index("label")
        docs, labels = [], []
        for line in f:
            fields = line.rstrip("\n").split("\t")
            docs.append(fields[col])
            labels.append(int(fields[lab]))
    return docs, labels


def run(table, tokenizer_file):
    start = time.perf_counter()
    docs, labels = read_table(table)
    tok = Tokenizer.from_file(tokenizer_file)
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    encodings = tok.encode_batch(docs, add_special_tokens=True)
    ids = [e.ids for e in encodings]
    types = [e.type_ids for e in encodings]
    valid = [len(i) for i in ids]
    elapsed = time.perf_counter() - start
    return elapsed, ids, types, valid, labels


def main():
    table, tokenizer_file = sys.argv[1], sys.argv[2]
    print(f"tokenizers {tokenizers.__version__}, {os.cpu_count()} CPUs, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset: on)')}")
    times = []
    for i in range(REPEATS):
        elapsed, ids, _types, valid, _labels = run(table, tokenizer_file)
        print(f"run {i + 1}: {elapsed:.3f} s ({len(ids)} rows, mean valid length {sum(valid) / len(valid):.2f})")
        times.append(elapsed)
    print(f"median of {REPEATS}: {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
