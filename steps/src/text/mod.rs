//! Text to tensors: the `train-tokenizer`, `tokenize` and `split` step kinds.
