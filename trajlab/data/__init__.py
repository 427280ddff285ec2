"""The data stage: corpora (bundled and user-given, mixtures with per-text domains), the byte-level BPE
tokenizer, and `ProbeSet` (the held-out texts every model is scored on). The bundled corpus files lie beside
these modules (``*.jsonl.gz``, ``corpora.json``)."""
