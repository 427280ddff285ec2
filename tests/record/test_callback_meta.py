"""TrajectoryCallback's store meta and layer schedule: the scoring block, warm-up and max steps, the lineage of a
run continued from a parent store, refusals (truncated vs whole texts, another scoring on resume, a version-1
store), and layers_every (every lens layer at every k-th snapshot and at the end, against score_model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_callback import TinyNet, one_line, tiny_callback, tiny_fit
from tiny_models import SAMPLE_TEXTS, make_tokenizer

from trajlab.data.probe import ProbeSet
from trajlab.lens import score_model
from trajlab.store import TrajectoryStore

FIXTURE_V1 = Path(__file__).parents[1] / "store" / "fixtures" / "store_v1"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def net_with(weights: dict[str, np.ndarray]) -> TinyNet:
    net = TinyNet()
    net.load_state_dict({n.removeprefix("net."): torch.from_numpy(w) for n, w in weights.items()})
    return net.eval()


def test_layers_every_scores_the_lens_at_every_kth_snapshot_and_the_end(tmp_path):
    cb = tiny_callback(tmp_path / "store", layers_every=3)  # weights "full" at every snapshot
    module = tiny_fit(tmp_path, [cb], max_steps=10)
    store = TrajectoryStore.open(tmp_path / "store")
    assert store.steps.tolist() == [0, 2, 4, 6, 8, 10]
    full = [0, 6, 10]  # schedule indices 0 and 3, and the run's last step
    assert store.full_layer_steps().tolist() == full
    for step in store.steps:
        assert store.snapshot_info(step)["layers"] == ([0, 1, 2] if step in full else [2])
    probe, tok = ProbeSet(SAMPLE_TEXTS), make_tokenizer()
    rows = store.loglik_all(store.full_layer_steps())  # (3, 3, N)
    np.testing.assert_array_equal(
        rows[-1], score_model(module.net.eval(), tok, probe, "all")
    )  # final weights
    for k, step in enumerate(full):  # each full snapshot = the lens of that step's stored weights
        net = net_with(store.full_weights(step))
        np.testing.assert_allclose(rows[k], score_model(net, tok, probe, "all"), rtol=1e-12)
    last = store.loglik(-1)  # every step holds the model's output
    for k, step in enumerate(store.steps):
        np.testing.assert_allclose(
            last[k], score_model(net_with(store.full_weights(step)), tok, probe, "last")[0]
        )
    with pytest.raises(ValueError, match=r"steps \[2, 4, 8\] .*3 steps hold every layer") as e:
        store.loglik_all()
    one_line(e)


def test_scoring_block_and_schedule_keys(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=4)
    meta = TrajectoryStore.open(tmp_path / "store").meta
    tok = make_tokenizer()
    whole = [len(tok(t, add_special_tokens=False)["input_ids"]) - 1 for t in SAMPLE_TEXTS]  # tokens 2..T
    assert max(whole) + 1 > TinyNet().context_length  # one text is longer than the window: rolled, not cut
    assert meta["scoring"] == {"long_texts": "rolling", "stride": 24, "window": 48, "n_tokens": whole,
                               "lens_dtype": "float32"}  # fmt: skip
    assert meta["max_steps"] == 4 and meta["warmup_steps"] is None  # TinyModule has no warmup_steps
    assert meta["lineage"] == {"root": meta["id"], "parent": None} and len(meta["id"]) == 32
    assert meta["config"]["callback"]["long_texts"] == "rolling"
    assert meta["config"]["callback"]["layers_every"] == 1


def test_parent_store_gives_the_lineage(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    tiny_fit(tmp_path, [tiny_callback(a)], max_steps=4)  # steps 0, 2, 4
    tiny_fit(tmp_path, [tiny_callback(b, parent=f"{a}@2")], max_steps=2)
    tiny_fit(tmp_path, [tiny_callback(c, parent=str(b))], max_steps=2)
    ma, mb, mc = (TrajectoryStore.open(p).meta for p in (a, b, c))
    assert mb["lineage"] == {"root": ma["id"], "parent": {"id": ma["id"], "step": 2}}
    assert mc["lineage"] == {"root": ma["id"], "parent": {"id": mb["id"], "step": 2}}  # b's last step
    assert mb["parent"] == {"run": ma["run"], "step": 2, "store": str(a)}
    assert len({ma["id"], mb["id"], mc["id"]}) == 3
    with pytest.raises(ValueError, match="has no snapshot at step 3") as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "d", parent=f"{a}@3")], max_steps=2)
    one_line(e)


def test_parent_scored_the_other_way_is_refused_before_training(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "a")], max_steps=2)
    cb = tiny_callback(tmp_path / "b", parent=str(tmp_path / "a"), long_texts="truncate")
    with pytest.raises(
        ValueError, match=r"cannot compare this run \(.*b\) \(long_texts='truncate'.* with .*a "
    ) as e:
        tiny_fit(tmp_path, [cb], max_steps=2)
    one_line(e)
    assert not (tmp_path / "b").exists() and cb.timings["snapshots"] == 0


def test_resume_with_another_scoring_or_into_a_version_1_store_is_refused(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "s")], max_steps=2)
    before = (tmp_path / "s" / "manifest.jsonl").read_bytes()
    with pytest.raises(
        ValueError, match="cannot resume .*: scoring long_texts truncate differs from the store's"
    ) as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "s", long_texts="truncate")], max_steps=4)
    one_line(e)
    assert (tmp_path / "s" / "manifest.jsonl").read_bytes() == before
    shutil.copytree(FIXTURE_V1, tmp_path / "v1")
    cb = tiny_callback(tmp_path / "v1", probe=ProbeSet(SAMPLE_TEXTS[:4], name="v1-fixture"), weights="sketch")
    with pytest.raises(
        ValueError, match="format-1 store .* opens read-only: write new snapshots to a new store"
    ):
        tiny_fit(tmp_path, [cb], max_steps=4)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"layers_every": 0}, "layers_every must be an int >= 1"),
        ({"layers_every": 2, "layers": "last"}, "layers_every=2 needs layers='all'"),
        ({"long_texts": "cut"}, "long_texts must be one of"),
    ],
)
def test_bad_settings_refused_at_construction(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        tiny_callback(None, **kw)
    one_line(e)
