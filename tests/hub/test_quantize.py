"""`trajlab quantize`: gguf's quantizers on every matrix, llama.cpp's type rule, the store it writes, bad input.

Independent computations: each matrix is rebuilt here with direct `gguf.quants` calls (GPT-2's Conv1D
transposed as the GGUF converter stores it), scored with `score_model`, and compared with the store's rows; the
KL to the parent is recomputed from the stores with numpy.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants
from tiny_models import tiny_gpt2, tiny_neox
from trained_lm import load, one_thread, trained_folder

from trajlab.cli import main
from trajlab.data import corpus
from trajlab.data.probe import ProbeSet
from trajlab.hub.importer import import_checkpoints
from trajlab.hub.quantize import quantization_plan, quantize_model, quantized_copy
from trajlab.lens import score_model
from trajlab.store import TrajectoryStore

N_TEXTS = 16


def gguf_matrix(w: torch.Tensor, name: str) -> torch.Tensor:
    """Quantize and dequantize one (rows, row length) matrix with gguf directly."""
    t = GGMLQuantizationType[name.upper()]
    x = w.detach().float().numpy()
    return torch.from_numpy(quants.dequantize(quants.quantize(x, t), t).reshape(x.shape))


def var2_bits_per_byte(a: np.ndarray, b: np.ndarray, n_bytes: np.ndarray) -> float:
    d = a - b
    return float(((d - d.mean()) ** 2).mean() / 2 / (n_bytes.mean() * np.log(2)))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """The trained model imported into a store (step 0) on 16 Shakespeare probe texts."""
    out = tmp_path_factory.mktemp("parent") / "store"
    probe = ProbeSet(corpus.probe_texts("shakespeare", N_TEXTS), name="shakespeare-16")
    import_checkpoints(trained_folder(), None, out, probe=probe, window=0, sketch_k=0, progress=False)
    return out


def test_plan_follows_llama_cpp_default_and_pure():
    neox = tiny_neox()
    plan = quantization_plan(neox, "q4_0")
    assert plan["gpt_neox.embed_in.weight"] == "q4_0"  # token embedding: the format
    assert plan["lm_head.weight"] == "q8_0"  # output: Q8_0 stands in for llama.cpp's Q6_K
    assert plan["gpt_neox.layers.0.attention.query_key_value.weight"] == "q4_0"
    assert plan["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"] == "q4_0"
    kept = {n for n, t in plan.items() if t == "f32"}
    assert kept == {n for n, p in neox.named_parameters() if p.ndim == 1}  # norms and biases
    assert quantization_plan(neox, "q4_0", "pure")["lm_head.weight"] == "q4_0"
    gpt2 = tiny_gpt2()
    plan = quantization_plan(gpt2, "q5_1")
    assert plan["transformer.wpe.weight"] == "f32"  # position embeddings stay (llama.cpp skips pos_embd)
    assert plan["transformer.wte.weight"] == "q8_0"  # tied with the head: treated as the output matrix
    assert plan["transformer.h.0.attn.c_attn.weight"] == "q5_1"


def test_matrices_are_gguf_roundtrips_rows_along_inputs():
    model = tiny_gpt2()
    q, _ = quantized_copy(model, "q4_0")
    w = model.transformer.h[0].attn.c_attn.weight  # Conv1D (in 32, out 96): GGUF rows are inputs
    torch.testing.assert_close(q.transformer.h[0].attn.c_attn.weight, gguf_matrix(w.T, "q4_0").T, rtol=0, atol=0)
    assert not torch.equal(q.transformer.h[0].attn.c_attn.weight, gguf_matrix(w, "q4_0"))  # not (out) rows
    torch.testing.assert_close(q.transformer.wte.weight, gguf_matrix(model.transformer.wte.weight, "q8_0"),
                               rtol=0, atol=0)
    torch.testing.assert_close(q.transformer.wpe.weight, model.transformer.wpe.weight, rtol=0, atol=0)
    torch.testing.assert_close(q.transformer.h[0].ln_1.weight, model.transformer.h[0].ln_1.weight)
    assert q.lm_head.weight is q.transformer.wte.weight  # still tied
    assert torch.equal(model.transformer.h[0].mlp.c_fc.weight, tiny_gpt2().transformer.h[0].mlp.c_fc.weight)


def test_store_holds_the_gguf_model_and_q8_is_closer_than_q4(parent, tmp_path):
    model, tok = load()
    with TrajectoryStore.open(parent) as p:
        base, n_bytes, pmeta = p.loglik(-1)[0], p.n_bytes, p.meta
    kls = {}
    for fmt in ("q8_0", "q4_0"):
        r = quantize_model(trained_folder(), fmt, out=tmp_path / fmt, parent=str(parent), progress=False)
        with TrajectoryStore.open(r.store) as s:
            assert list(s.steps) == [0] and s.probe_fingerprint == pmeta["probe_fingerprint"]
            meta, rows = s.meta, s.snapshot_array(0)
            assert s.snapshot_info(0)["layers"] == [0, 1, 2]
        assert meta["quantization"]["format"] == fmt and meta["quantization"]["source"] == str(trained_folder())
        assert meta["quantization"]["parent"] == {"id": pmeta["id"], "step": 0, "store": str(parent)}
        assert meta["lineage"] == {"root": pmeta["lineage"]["root"], "parent": {"id": pmeta["id"], "step": 0}}
        assert meta["run"] == f"{pmeta['run']}-{fmt}"
        # The same model rebuilt with direct gguf calls scores exactly the store's rows.
        ref = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if p.ndim == 2:
                    p.copy_(gguf_matrix(p, "q8_0" if name == "lm_head.weight" else fmt))
        expected = score_model(ref, tok, corpus.probe_texts("shakespeare", N_TEXTS), "all")
        np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-9)
        kls[fmt] = var2_bits_per_byte(base, rows[-1], n_bytes)
        assert r.kl_to_parent == pytest.approx(kls[fmt], rel=1e-9)
    assert 0 < kls["q8_0"] < kls["q4_0"] / 10


def test_cli_end_to_end(parent, tmp_path, capsys):
    out = tmp_path / "q5"
    assert main(["quantize", str(trained_folder()), "--format", "Q5_0", "--out", str(out), "--parent",
                 f"{parent}@0", "--rule", "pure", "--layers", "last", "--scoring.batch_size", "3",
                 "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{out}: q5_0, 10 matrices quantized, 18 tensors kept in f32, step 0; KL to the parent")
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["quantization"]["tensors"].values()) == {"q5_0", "f32"}  # pure: the output too
    with TrajectoryStore.open(out) as s:
        assert s.snapshot_info(0)["layers"] == [2]


def error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


def test_bad_input_is_one_line_and_writes_nothing(parent, tmp_path, capsys):
    odd = tmp_path / "odd"  # hidden size 48: rows of 48 values do not tile into 32-value blocks
    tiny_neox(hidden=48).save_pretrained(odd)
    load()[1].save_pretrained(odd)
    out, model = tmp_path / "never", str(trained_folder())
    cases = {
        "unknown format 'q6_k'": [model, "--format", "q6_k", "--out", str(out)],
        "step 7 is not in": [model, "--format", "q8_0", "--out", str(out), "--parent", f"{parent}@7"],
        "not a multiple of the 32-value block": [str(odd), "--format", "q4_0", "--out", str(out), "--parent",
                                                 str(parent)],
        "is already a trajectory store": [model, "--format", "q8_0", "--out", str(parent)],
        "long_texts='truncate' (the parent's: 'rolling') differ": [model, "--format", "q8_0", "--out", str(out),
                                                                   "--parent", str(parent), "--long-texts",
                                                                   "truncate"],
    }
    for expected, argv in cases.items():
        assert expected in error_line(capsys, ["quantize", *argv])
        assert not out.exists()
    with pytest.raises(ValueError, match="other texts than the parent"):
        quantize_model(model, "q8_0", out=out, parent=str(parent), probe=ProbeSet(["another text entirely"]))
    assert not out.exists()


def test_warns_when_the_source_is_not_the_parent_snapshot(parent, tmp_path):
    other = tmp_path / "other"
    tiny_neox(vocab_size=512, hidden=32, ctx=1024).save_pretrained(other)
    load()[1].save_pretrained(other)
    with pytest.warns(UserWarning, match="differs from .* at step 0"):
        quantize_model(other, "q8_0", out=tmp_path / "q", parent=str(parent), layers="last", progress=False)
