"""Checks that a model directory written by pipe (`fine-tune` or `pretrain`) tokenizes raw text in
Hugging Face `transformers` exactly as pipe's `tokenize` step did.

    python steps/tests/reference/hf_tokenizer_ids.py MODEL_DIR TENSOR_SET_DIR TABLE [options]

TABLE is the text table that `tokenize` read into TENSOR_SET_DIR (its `tensors` output); the
options repeat the `tokenize` parameters that were used (--text-column, --text-b-column,
--label-column, --separator, --empty, --malformed; the defaults are tokenize's). The table is read
as pipe reads it (split on the separator only, quoting off, see steps/src/text/table.rs), and each
row is tokenized the way a user would:

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    tok(texts, truncation=True)        # max_length: tok.model_max_length

The ids and token types must equal the tensor set's row (its `valid_length` tokens), for every row.
`tokenizers.Tokenizer.from_file(MODEL_DIR/tokenizer.json)` alone (its own truncation) must give
them too. `--slow` also checks `transformers`' pure-Python BERT tokenizer (vocab.txt and the
config's do_lower_case / strip_accents / tokenize_chinese_chars; what `use_fast=False` gives in
transformers 4) when the tokenizer class is BertTokenizer; Python's Unicode tables may differ from
Rust's on rare characters.

Pairs (--text-b-column) differ in one known corner case: `tokenize` truncates pairs as GluonNLP,
`transformers`' longest_first gives an odd leftover token to the second text instead of the first.

Exits 0 when everything matches, 1 on a difference (the first rows are shown), 2 on bad usage.
Needs transformers, tokenizers and numpy (from PyPI); no torch.
"""

import argparse
import json
import os
import re
import struct
import sys

import numpy as np

# Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` removes; Python's
# str.strip() also strips \x1c-\x1f.
_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_INTEGER = re.compile(r"[+-]?[0-9]+")


def rust_trim(s):
    return s.strip(_RUST_WHITESPACE)


def read_table(path, separator):
    """The header and the data lines of a table, as steps/src/text/table.rs reads them.

    Returns (column names, rows as lists of fields, 1-based line numbers, malformed lines).
    """
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    text = text.removeprefix("\ufeff")
    text = text.removesuffix("\n")
    lines = text.split("\n")
    header = lines[0].rstrip("\r")
    names = header.split(separator)
    rows, line_numbers, malformed = [], [], []
    for i, line in enumerate(lines[1:]):
        line = line.removesuffix("\r")
        fields = line.split(separator)
        if len(fields) != len(names) or (line == "" and len(names) > 1):
            malformed.append(i + 2)
            continue
        rows.append(fields)
        line_numbers.append(i + 2)
    return names, rows, line_numbers, malformed


def read_rows(path, text_column="document", text_b_column=None, label_column="label", separator="\t",
              empty="keep", malformed="error"):
    """The rows `tokenize` keeps, in its order: a list of (line, text, text_b or None, label)."""
    names, rows, line_numbers, bad = read_table(path, separator)
    if bad and malformed == "error":
        raise SystemExit(f"{path}: line {bad[0]} has the wrong number of fields (tokenize would fail)")

    def index(name, param):
        if name not in names:
            raise SystemExit(f"{path} has no column `{name}` ({param}); its columns are {names}")
        return names.index(name)

    ia = index(text_column, "--text-column")
    ib = index(text_b_column, "--text-b-column") if text_b_column else None
    il = index(label_column, "--label-column") if label_column else None
    out = []
    for fields, line in zip(rows, line_numbers):
        a = fields[ia]
        b = fields[ib] if ib is not None else None
        label = -1
        if il is not None:
            value = rust_trim(fields[il])
            if not _INTEGER.fullmatch(value):
                if malformed == "drop":
                    continue
                raise SystemExit(f"{path} line {line}: label `{fields[il]}` is not an integer (tokenize would fail)")
            label = int(value)
        if rust_trim(a) == "" or (b is not None and rust_trim(b) == ""):
            if empty == "drop":
                continue
            if empty == "error":
                raise SystemExit(f"{path} line {line}: the text is empty (tokenize would fail)")
        out.append((line, a, b, label))
    return out


def read_safetensors(path):
    """The tensors of a safetensors file as numpy arrays (the format is an 8-byte header length,
    a JSON header, then the data)."""
    dtypes = {"U8": np.uint8, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "F32": np.float32}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=np.dtype(dtypes[t["dtype"]]).newbyteorder("<"))
    return out


def read_tensor_set(set_dir):
    """(meta, rows): each row is (input_ids, token_type_ids, label), padding removed."""
    with open(os.path.join(set_dir, "meta.json")) as f:
        meta = json.load(f)
    t = read_safetensors(os.path.join(set_dir, "tensors.safetensors"))
    ids, types, offsets, valid, labels = (t[k] for k in
                                          ("input_ids", "token_type_ids", "offsets", "valid_length", "labels"))
    rows = []
    for i in range(len(valid)):
        start, n = int(offsets[i]), int(valid[i])
        rows.append((ids[start:start + n].tolist(), types[start:start + n].tolist(), int(labels[i])))
    return meta, rows


def compare(name, ours, theirs, table_rows, show, to_tokens):
    """Prints the first `show` rows where `theirs` (ids, types) differs from `ours`; returns the
    number of differing rows."""
    differ = 0
    for k, ((ids, types, _), (hf_ids, hf_types), (line, a, b, _)) in enumerate(zip(ours, theirs, table_rows)):
        if ids == list(hf_ids) and types == list(hf_types):
            continue
        differ += 1
        if differ <= show:
            text = a if b is None else f"{a} || {b}"
            print(f"  {name}: row {k} (line {line}) differs: {text[:80]!r}")
            print(f"    pipe: {ids} types {types}")
            print(f"    {name}: {list(hf_ids)} types {list(hf_types)}")
            if to_tokens is not None:
                print(f"    pipe tokens: {to_tokens(ids)}")
                print(f"    {name} tokens: {to_tokens(list(hf_ids))}")
    return differ


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("tensor_set_dir")
    p.add_argument("table")
    p.add_argument("--text-column", default="document")
    p.add_argument("--text-b-column", default=None)
    p.add_argument("--label-column", default="label", help='"" for unlabelled text')
    p.add_argument("--separator", default="\t", help="a tab (default) or ','")
    p.add_argument("--empty", choices=["keep", "drop", "error"], default="keep")
    p.add_argument("--malformed", choices=["drop", "error"], default="error")
    p.add_argument("--slow", action="store_true", help="also check the pure-Python BERT tokenizer")
    p.add_argument("--show", type=int, default=5, help="differing rows to print")
    args = p.parse_args()
    separator = {"\\t": "\t", "tab": "\t", "comma": ","}.get(args.separator, args.separator)

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    meta, ours = read_tensor_set(args.tensor_set_dir)
    table_rows = read_rows(args.table, args.text_column, args.text_b_column, args.label_column or None,
                           separator, args.empty, args.malformed)
    if len(table_rows) != len(ours):
        print(f"FAIL: {args.table} gives {len(table_rows)} rows, the tensor set has {len(ours)}; "
              "give the --empty / --malformed / column options tokenize was run with")
        return 1
    if args.label_column and any(label != r[2] for (_, _, _, label), r in zip(table_rows, ours)):
        print("FAIL: the table's labels differ from the tensor set's: the rows do not line up; "
              "give the options tokenize was run with")
        return 1

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    failures = []
    if tok.model_max_length != meta["max_len"]:
        failures.append(f"model_max_length is {tok.model_max_length}, the tensor set was cut to max_len "
                        f"{meta['max_len']}")
    a = [r[1] for r in table_rows]
    b = [r[2] for r in table_rows] if args.text_b_column else None
    # What a user does: truncation to the tokenizer's own model_max_length.
    enc = tok(a, b, truncation=True, return_token_type_ids=True)
    hf = list(zip(enc["input_ids"], enc["token_type_ids"]))
    to_tokens = tok.convert_ids_to_tokens
    differ = compare("AutoTokenizer", ours, hf, table_rows, args.show, to_tokens)
    if differ:
        failures.append(f"AutoTokenizer ({type(tok).__name__}): {differ} of {len(ours)} rows differ")

    raw = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    encodings = raw.encode_batch(list(zip(a, b)) if b is not None else a)
    differ = compare("tokenizers", ours, [(e.ids, e.type_ids) for e in encodings], table_rows, args.show, to_tokens)
    if differ:
        failures.append(f"tokenizers.Tokenizer.from_file: {differ} of {len(ours)} rows differ")

    with open(os.path.join(args.model_dir, "tokenizer_config.json")) as f:
        tokenizer_class = json.load(f).get("tokenizer_class")
    slow_checked = args.slow and tokenizer_class == "BertTokenizer"
    if args.slow and not slow_checked:
        print(f"note: no slow tokenizer check: tokenizer_class is {tokenizer_class}, which has no slow form")
    if slow_checked:
        try:  # transformers 5 keeps the pure-Python BERT tokenizer here
            from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
        except ImportError:  # transformers 4
            from transformers import BertTokenizer as Slow
        slow = Slow.from_pretrained(args.model_dir)
        enc = slow(a, b, truncation=True, return_token_type_ids=True)
        differ = compare("slow", ours, list(zip(enc["input_ids"], enc["token_type_ids"])), table_rows, args.show,
                         to_tokens)
        if differ:
            failures.append(f"slow {type(slow).__name__}: {differ} of {len(ours)} rows differ")

    import transformers
    import tokenizers
    versions = f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
    if failures:
        print(f"FAIL: {args.model_dir} ({versions}):")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"OK: {len(ours)} rows tokenize identically ({type(tok).__name__}, model_max_length "
          f"{tok.model_max_length}; tokenizers.Tokenizer{'; slow tokenizer' if slow_checked else ''}; {versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
