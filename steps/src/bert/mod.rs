//! BERT in candle: the model and the `fine-tune`, `evaluate` and `pretrain` step kinds.
