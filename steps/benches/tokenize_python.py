"""Python side of the tokenize benchmark (see steps/BENCHMARKS_TEXT.md).

Does what the `tokenize` step does, with the Python `tokenizers` library:
read the table (tab-separated, quoting off), encode every review with
`encode_batch` (Rust, all cores), truncate and add [CLS]/[SEP] with the
library's own truncation and template, and collect ids, token types and
valid lengths. Median of 3 runs.

    pip install tokenizers
    python3 steps/benches/tokenize_python.py WORK_DIR/nsmc_all.tsv WORK_DIR/tokenizer.json \
        [--fast] [--compare WORK_DIR/tokenize/tensors]

--fast uses `encode_batch_fast` (no offsets) instead of `encode_batch`.

With --compare, the ids, token types and valid lengths are checked row by row
against the tensor set the Rust `tokenize` step wrote (the benchmark example
leaves it in WORK_DIR/tokenize/tensors).
"""

import array
import json
import os
import statistics
import struct
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


def run(table, tokenizer_file, fast=False):
    start = time.perf_counter()
    docs, labels = read_table(table)
    tok = Tokenizer.from_file(tokenizer_file)
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    encodings = encode(docs, add_special_tokens=True)
    ids = [e.ids for e in encodings]
    types = [e.type_ids for e in encodings]
    valid = [len(i) for i in ids]
    elapsed = time.perf_counter() - start
    return elapsed, ids, types, valid, labels


def read_safetensors(path):
    """The tensors of a safetensors file as flat arrays (no numpy needed)."""
    codes = {"U8": "B", "U32": "I", "U64": "Q", "I64": "q"}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        values = array.array(codes[info["dtype"]])
        values.frombytes(data[8 + n + begin:8 + n + end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = values
    return out


def compare(tensor_dir, ids, types, valid, labels):
    t = read_safetensors(os.path.join(tensor_dir, "tensors.safetensors"))
    offsets = t["offsets"]
    assert len(offsets) == len(ids) + 1, (len(offsets), len(ids))
    for i in range(len(ids)):
        a, b = offsets[i], offsets[i + 1]
        assert list(t["input_ids"][a:b]) == ids[i], f"row {i}: ids differ"
        assert list(t["token_type_ids"][a:b]) == types[i], f"row {i}: types differ"
        assert t["valid_length"][i] == valid[i], f"row {i}: valid length differs"
        assert t["labels"][i] == labels[i], f"row {i}: label differs"
    print(f"identical to {tensor_dir}: {len(ids)} rows, {offsets[-1]} tokens")


def main():
    table, tokenizer_file = sys.argv[1], sys.argv[2]
    print(f"tokenizers {tokenizers.__version__}, {os.cpu_count()} CPUs, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset: on)')}")
    fast = "--fast" in sys.argv
    print("encode_batch_fast" if fast else "encode_batch")
    times = []
    for i in range(REPEATS):
        elapsed, ids, _types, valid, _labels = run(table, tokenizer_file, fast)
        print(f"run {i + 1}: {elapsed:.3f} s ({len(ids)} rows, mean valid length {sum(valid) / len(valid):.2f})")
        times.append(elapsed)
    print(f"median of {REPEATS}: {statistics.median(times):.3f} s")
    if "--compare" in sys.argv:
        _elapsed, ids, types, valid, labels = run(table, tokenizer_file)
        compare(sys.argv[sys.argv.index("--compare") + 1], ids, types, valid, labels)


if __name__ == "__main__":
    main()
