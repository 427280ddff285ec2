"""TrajectoryCallback: schedules, what it records (against transformers' forward and direct formulas), training
unchanged, gradient accumulation, resume and replay, a LightningModule that is not trajlab's, and bad inputs."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tiny_models import SAMPLE_TEXTS, make_tokenizer
from torch import nn

from trajlab.data.probe import ProbeSet
from trajlab.data.tokenizer import tokenizer_fingerprint
from trajlab.record.callback import TrajectoryCallback
from trajlab.record.probes import resolve_probe
from trajlab.record.ranks import assembled_shards
from trajlab.record.schedule import snapshot_steps
from trajlab.record.writer import training_state_preserved
from trajlab.sketch import WeightSketch
from trajlab.store import TrajectoryStore
from trajlab.train.lit import HFExport, LitLM, LMDataModule
from trajlab.train.models import model_config

ROOT = Path(__file__).resolve().parents[2]
DEBUG = yaml.safe_load((ROOT / "configs" / "debug.yaml").read_text())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these models are small enough that a second one buys little, and a shared 2-core
    machine stays responsive (runs compared with each other all run here, so results stay comparable)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- schedules ----


def test_pythia_schedule_is_pythias_checkpoint_list():
    revisions = [0, *(2**i for i in range(10)), *range(1000, 143001, 1000)]  # the 154 published revisions
    assert snapshot_steps("pythia", 143000) == revisions
    # scaled by 0.1 on 600 steps, rounded half up by hand: 0.8 -> 1, 1.6 -> 2, 3.2 -> 3, 6.4 -> 6, 12.8 -> 13, ...
    assert snapshot_steps("pythia:0.1", 600) == [0, 1, 2, 3, 6, 13, 26, 51, 100, 200, 300, 400, 500, 600]
    assert snapshot_steps("pythia:0.5", 3) == [0, 1, 2]  # 0.5 -> 1, 1 -> 1, 2 -> 2, 4 -> beyond max


def test_log_every_and_list_schedules():
    steps = snapshot_steps("log:12", 5000)
    assert steps[:2] == [0, 1] and steps[-1] == 5000 and len(steps) == 13
    ratios = np.diff(np.log(steps[1:]))
    assert np.allclose(ratios, np.log(5000) / 11, atol=0.2)  # geometric spacing up to rounding
    assert snapshot_steps("every:5", 22) == [0, 5, 10, 15, 20]
    assert snapshot_steps([30, 3, 3, 7], 20) == [3, 7]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pythia:-1", "scale must be a positive"),
        ("every", "unknown snapshot schedule"),
        ("log:2.5", "count must"),
        ("nope", "unknown snapshot schedule"),
        ([-1, 3], "non-negative int"),
    ],
)
def test_bad_schedule_refused_at_construction(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        TrajectoryCallback(schedule=spec)
    assert "\n" not in str(e.value)


# ---- helpers ----


def test_training_state_preserved_restores_rng_and_modes():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    net[1].eval()  # mixed modes must come back as they were
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with training_state_preserved(net):
        net.eval()
        random.random(), np.random.rand(5), torch.rand(7)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    assert net.training and net[0].training and not net[1].training


def test_assembled_shards_checks_each_text_once():
    n, world = 5, 2
    ids = np.array([[0, 2, 4], [1, 3, -1]])  # rank r holds r, r + 2, ...; -1 pads rank 1
    vals = np.stack([np.stack([ids[r] * 10.0, ids[r] * 100.0]) for r in range(world)])  # (W, R=2, M=3)
    assert np.array_equal(
        assembled_shards(ids, vals, n), np.stack([np.arange(n) * 10.0, np.arange(n) * 100.0])
    )
    with pytest.raises(RuntimeError, match="probe text 3 was scored 2 times"):
        assembled_shards(np.array([[0, 2, 4], [1, 3, 3]]), vals, n)
    with pytest.raises(RuntimeError, match="probe text 3 was scored 0 times"):
        assembled_shards(np.array([[0, 2, 4], [1, -1, -1]]), vals, n)


# ---- the debug recipe ----


class DropoutLM(LitLM):
    """LitLM with dropout in its GPT-NeoX model, so training draws random numbers at every step."""

    def configure_model(self) -> None:
        if self.model is None:
            from transformers import AutoModelForCausalLM

            self.tokenizer = self.trainer.datamodule.tokenizer
            cfg = model_config(self.hparams.preset, len(self.tokenizer), self.hparams.context_length)
            cfg.hidden_dropout = cfg.attention_dropout = 0.1
            self.model = AutoModelForCausalLM.from_config(cfg)


def debug_fit(
    run_dir: Path, callbacks: list, module=DropoutLM, ckpt_path=None, model_args=None, data_args=None
):
    """Fit configs/debug.yaml's recipe (trainer, model and data settings) in-process; returns the module."""
    L.seed_everything(DEBUG["seed_everything"])
    trainer_args = {k: v for k, v in DEBUG["trainer"].items() if k not in ("logger", "callbacks")}
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=-1, every_n_train_steps=10
    )
    trainer = L.Trainer(
        **trainer_args | {"enable_progress_bar": False, "enable_model_summary": False},
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name="", version=""),
        callbacks=[*callbacks, HFExport(), ckpt],
    )
    model = module(**DEBUG["model"] | (model_args or {}))
    trainer.fit(model, LMDataModule(**DEBUG["data"] | (data_args or {})), ckpt_path=ckpt_path)
    return model


@pytest.fixture(scope="module")
def dropout_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dropout")
    # A 128-token context (the recipe's holds every probe text): texts of ~500 tokens are scored in windows.
    short = {"model_args": {"context_length": 128}, "data_args": {"seq_len": 128, "batch_size": 6}}
    plain = debug_fit(base / "plain", [], **short)
    cb = TrajectoryCallback(schedule="every:5", weights="full", full_every=1, map_every=2)
    recorded = debug_fit(base / "recorded", [cb], **short)
    return plain, recorded, base / "recorded"


def test_training_unchanged_by_callback(dropout_runs):
    plain, recorded, _ = dropout_runs
    assert recorded.model.config.hidden_dropout > 0 and plain.model.config.attention_dropout > 0
    a, b = plain.model.state_dict(), recorded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def direct_loglik(logits, ctx: int, tokenizer, texts: list[str]) -> np.ndarray:
    """(N,) summed log p(token t | tokens < t), t >= 2, from `logits(ids (1, T)) -> (1, T, V)` (float64
    log-softmax). A text longer than the context `ctx` is scored one window at a time: windows [b, b + ctx) at
    b = 0, ctx // 2, ctx, ..., each scoring only the tokens no earlier window scored (transformers' "Perplexity
    of fixed-length models")."""
    out = []
    for text in texts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        total, scored = 0.0, 1  # tokens [0, scored) are done; token 0 is never scored
        for begin in range(0, len(ids) - 1, ctx // 2):
            window = ids[begin : begin + ctx][None]
            with torch.no_grad():
                logp = torch.log_softmax(logits(window)[0, :-1].double(), -1)  # predicts window[1:]
            per_token = logp.gather(1, window[0, 1:, None])[:, 0]  # entry j: token begin + 1 + j
            total += per_token[scored - begin - 1 :].sum().item()
            scored = begin + window.shape[1]
            if scored == len(ids):
                break
        out.append(total)
    return np.array(out)


def test_records_match_the_model_at_each_step(dropout_runs):
    from transformers import AutoModelForCausalLM

    _, recorded, run = dropout_runs
    store = TrajectoryStore.open(run / "trajectory")
    assert store.steps.tolist() == [0, 5, 10, 15, 20] and store.n_layers == 2
    assert store.probe().texts == recorded.trainer.datamodule.probe_texts
    meta = store.meta
    assert meta["run"] == "recorded" and meta["seed"] == 0 and meta["preset"] == "nano"
    assert meta["tokenizer"]["fingerprint"] == tokenizer_fingerprint(recorded.tokenizer)
    ctx, tok = recorded.model.config.max_position_embeddings, recorded.tokenizer
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in store.probe().texts]
    assert max(lengths) > ctx  # the probe has texts longer than the context: scored whole, in windows
    assert meta["scoring"] == {"long_texts": "rolling", "stride": ctx // 2, "window": ctx,
                               "n_tokens": [n - 1 for n in lengths], "lens_dtype": "float32"}  # fmt: skip
    assert meta["warmup_steps"] == DEBUG["model"]["warmup_steps"]
    assert meta["max_steps"] == DEBUG["trainer"]["max_steps"]
    full = {int(s): store.full_weights(s) for s in store.steps}
    assert all(np.array_equal(full[20][n], p.detach().numpy()) for n, p in recorded.model.named_parameters())
    texts, ll, sketches = store.probe().texts, store.loglik(-1), store.weight_sketch()
    model = AutoModelForCausalLM.from_config(recorded.model.config).eval()
    for k, step in enumerate(store.steps):
        weights = full[int(step)]
        model.load_state_dict({n: torch.from_numpy(w) for n, w in weights.items()}, strict=False)
        direct = direct_loglik(lambda ids: model(ids).logits, ctx, recorded.tokenizer, texts)
        np.testing.assert_allclose(ll[k], direct, rtol=2e-5)
        expect_sketch = WeightSketch(4096).sketch([(n, torch.from_numpy(w)) for n, w in weights.items()])
        np.testing.assert_array_equal(sketches[k], expect_sketch)
        for j in range(k):
            before = full[int(store.steps[j])]
            direct = sum(float(((weights[n].astype(np.float64) - before[n]) ** 2).sum()) for n in weights)
            assert store.weight_sq_dist(store.steps[j], step) == pytest.approx(direct, rel=1e-12)
    assert (run / "trajectory" / "trajectory_map.png").stat().st_size > 1000


def kl_direct(a: np.ndarray, b: np.ndarray, n_bytes: np.ndarray | None = None) -> float:
    """Var(a - b) / 2 (ddof 0), in bits per byte when n_bytes is given."""
    kl = float(np.var(a - b)) / 2
    return kl / (n_bytes.mean() * np.log(2)) if n_bytes is not None else kl


def test_logged_metrics_are_the_stores_kl(dropout_runs):
    _, _, run = dropout_runs
    store = TrajectoryStore.open(run / "trajectory")
    layers, nb = store.loglik_all(), store.n_bytes  # (K, 3, N)
    with open(run / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f) if r.get("traj/score_s")}
    assert sorted(rows) == store.steps.tolist()
    for k, step in enumerate(store.steps):
        r = rows[int(step)]
        for layer in (1, 2):
            assert float(r[f"traj/kl_layer_{layer}"]) == pytest.approx(
                kl_direct(layers[k, layer - 1], layers[k, layer], nb), rel=1e-9
            )
        if k == 0:
            assert r["traj/kl_prev"] == "" and r["traj/w_dist_prev"] == ""
            continue
        last, prev = layers[k, -1], layers[k - 1, -1]
        assert float(r["traj/kl_prev"]) == pytest.approx(kl_direct(prev, last, nb), rel=1e-9)
        assert float(r["traj/kl_prev_nats"]) == pytest.approx(kl_direct(prev, last), rel=1e-9)
        assert float(r["traj/kl_first"]) == pytest.approx(kl_direct(layers[0, -1], last, nb), rel=1e-9)
        w = store.weight_sq_dist(store.steps[k - 1], step)
        assert float(r["traj/w_dist_prev"]) == pytest.approx(np.sqrt(w), rel=1e-9)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    """An uninterrupted run without dropout (so a resumed run is bitwise equal), checkpoints at 10 and 20."""
    run = tmp_path_factory.mktemp("plain") / "full"
    debug_fit(run, [TrajectoryCallback(schedule="every:5", weights="full", full_every=1)], module=LitLM)
    return run


def test_resume_continues_and_replays_without_duplicates(plain_run, tmp_path):
    full = plain_run
    ref = TrajectoryStore.open(full / "trajectory")
    # A crash after step 15 but before the next checkpoint: the store holds 0..15, the last checkpoint is step 10.
    crashed = tmp_path / "crashed"
    shutil.copytree(full / "trajectory", crashed)
    lines = (crashed / "manifest.jsonl").read_text().splitlines(keepends=True)
    (crashed / "manifest.jsonl").write_text("".join(lines[:4]))
    stored_15 = TrajectoryStore.open(crashed).snapshot_info(15)
    # Resume into the crashed store, and at the same time into a new store (a run branched from the checkpoint).
    branch = tmp_path / "branch"
    with pytest.warns(UserWarning, match=r"scheduled steps \[0, 5\] before the resume step 10"):
        debug_fit(
            tmp_path / "resumed",
            [
                TrajectoryCallback(crashed, schedule="every:5", weights="full", full_every=1),
                TrajectoryCallback(branch, schedule="every:5", weights="full", full_every=1),
            ],
            module=LitLM,
            ckpt_path=full / "checkpoints" / "epoch=0-step=10.ckpt",
        )
    done = TrajectoryStore.open(crashed)
    assert done.steps.tolist() == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(done.loglik_all(), ref.loglik_all())  # bitwise
    assert done.snapshot_info(15) == stored_15  # the stored snapshot is kept, not rewritten
    # No callback state in the checkpoint names this store, so its steps 10 and 15 are rescored and verified.
    assert [n["payload"] for n in done.notes("replay")] == [
        {"step": s, "max_abs_diff": 0.0} for s in (10, 15)
    ]
    for a in (10, 15):  # distances of step 20 to the checkpoint's step and to the replayed step
        assert done.weight_sq_dist(a, 20) == ref.weight_sq_dist(a, 20)
    new = TrajectoryStore.open(branch)
    assert new.steps.tolist() == [10, 15, 20]
    np.testing.assert_array_equal(new.loglik_all(), ref.loglik_all()[2:])


def test_finetune_scores_the_parent_probe(plain_run, tmp_path):
    pre, ft = plain_run, tmp_path / "ft"
    # Fine-tuning on another split seed gives another held-out probe; probe="parent" keeps the parent's.
    tuned = debug_fit(
        ft,
        [TrajectoryCallback(probe="parent", schedule="every:5", layers="last")],
        module=LitLM,
        model_args={"init_from": str(pre / "hf")},
        data_args={"split_seed": 1, "tokenizer": str(pre / "hf")},
    )
    parent, child = TrajectoryStore.open(pre / "trajectory"), TrajectoryStore.open(ft / "trajectory")
    assert child.probe_fingerprint == parent.probe_fingerprint
    assert child.probe().texts != tuned.trainer.datamodule.probe_texts
    assert child.meta["parent"] == {"run": "full", "step": 20, "store": str(pre / "trajectory")}
    root = parent.meta["id"]  # a pretraining run is its own root; the fine-tune names its last snapshot
    assert parent.meta["lineage"] == {"root": root, "parent": None}
    assert child.meta["lineage"] == {"root": root, "parent": {"id": root, "step": 20}}
    assert child.meta["warmup_steps"] == DEBUG["model"]["warmup_steps"] and child.meta["max_steps"] == 20
    # Step 0 of the fine-tune is the parent's last snapshot: the same model on the same texts.
    np.testing.assert_allclose(child.loglik(-1)[0], parent.loglik(-1)[-1], rtol=1e-6)
    assert child.weight_steps.tolist() == child.steps.tolist()  # weights="sketch" default


# ---- any LightningModule: a small network scored through the lens adapter ----


class TinyNet(nn.Module):
    """A next-token model that is not a transformers model; it follows trajlab.lens.LensAdapter.

    It draws from the global torch RNG while scoring (as a sampling-based model would), so a callback that
    did not restore the RNG would change the training that follows.
    """

    def __init__(self, vocab: int = 320, d: int = 16, n_layers: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(0.2)) for _ in range(n_layers)
        )
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)
        self.context_length = 48

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        if not self.training:
            torch.rand(3)
        h = self.emb(input_ids)  # (B, T, d)
        states = [h]
        for block in self.blocks:
            h = h + block(h)
            states.append(h)
        return states

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(h))  # (..., V)


class TinyModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = TinyNet()

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        logits = self.net.unembed(self.net.hidden_states(ids[:, :-1], None)[-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def tiny_fit(run_dir: Path, callbacks: list, max_steps: int = 6, **trainer_args) -> TinyModule:
    """Fit TinyModule on shuffled windows of the sample texts (shuffling and dropout use the torch RNG)."""
    L.seed_everything(0)
    ids = torch.tensor(make_tokenizer()(" ".join(SAMPLE_TEXTS * 3))["input_ids"])
    windows = ids[: len(ids) // 16 * 16].view(-1, 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(windows), batch_size=4, shuffle=True)
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        enable_model_summary=False,
        default_root_dir=run_dir,
        callbacks=callbacks,
        **quiet | trainer_args,
    )
    module = TinyModule()
    trainer.fit(module, loader)
    return module


def tiny_callback(out_dir, **kw) -> TrajectoryCallback:
    kw = {
        "probe": ProbeSet(SAMPLE_TEXTS),
        "schedule": "every:2",
        "model": "net",
        "tokenizer": make_tokenizer(),
        "weights": "full",
        "full_every": 1,
    } | kw
    return TrajectoryCallback(out_dir, **kw)


def test_any_lightning_module_through_the_adapter_with_accumulation(tmp_path):
    cb = tiny_callback(tmp_path / "store")
    recorded = tiny_fit(tmp_path, [cb], accumulate_grad_batches=2)
    plain = tiny_fit(tmp_path, [], accumulate_grad_batches=2)
    two_steps = tiny_fit(tmp_path, [], max_steps=2, accumulate_grad_batches=2)
    a, b = plain.state_dict(), recorded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # RNG and train flags restored around scoring
    store = TrajectoryStore.open(tmp_path / "store")
    assert store.steps.tolist() == [0, 2, 4, 6] and cb.timings["snapshots"] == 4  # once per optimizer step
    # Step 2 is the model after exactly 2 optimizer steps (4 micro-batches).
    assert all(
        np.array_equal(store.full_weights(2)[n], p.detach().numpy())
        for n, p in two_steps.net.named_parameters()
    )
    # The last row is the model's own next-token log-likelihood, computed here directly (the last text is longer
    # than the context of 48 tokens: scored whole, in windows).
    net = recorded.net.eval()
    direct = direct_loglik(
        lambda ids: net.unembed(net.hidden_states(ids, None)[-1]), 48, make_tokenizer(), SAMPLE_TEXTS
    )
    np.testing.assert_allclose(store.loglik(-1)[-1], direct, rtol=1e-5)
    assert store.loglik_all().shape == (4, 3, len(SAMPLE_TEXTS))


# ---- bad inputs: each a clear one-line error, nothing already written lost ----


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def test_resuming_into_a_store_with_another_probe(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=2)
    before = (tmp_path / "store" / "manifest.jsonl").read_bytes()
    with pytest.raises(ValueError, match="probe fingerprint .* differs from the store's") as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "store", probe=ProbeSet(SAMPLE_TEXTS[:3]))], max_steps=2)
    one_line(e)
    assert (tmp_path / "store" / "manifest.jsonl").read_bytes() == before


def test_corrupted_snapshot_file_is_named(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=2)
    ll_file = tmp_path / "store" / "snapshots" / "step_00000002.ll.npy"
    ll_file.write_bytes(ll_file.read_bytes()[:-8])  # truncated
    with pytest.raises(ValueError, match="step_00000002.ll.npy is truncated or corrupted") as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=4)
    one_line(e)


def test_store_already_holding_every_step_is_not_duplicated(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=4)
    first = TrajectoryStore.open(tmp_path / "store")
    # The same run from the start again into the same store: every step is already stored and is verified.
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store")], max_steps=4)
    again = TrajectoryStore.open(tmp_path / "store")
    assert again.steps.tolist() == first.steps.tolist() == [0, 2, 4]
    assert [n["payload"] for n in again.notes("replay")] == [
        {"step": s, "max_abs_diff": 0.0} for s in (0, 2, 4)
    ]


def test_unwritable_store_location(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(PermissionError, match="is not a writable directory") as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "file" / "store")], max_steps=2)
    one_line(e)


def test_two_callbacks_on_one_store(tmp_path):
    # Spelt differently, so Lightning's check for equal state keys does not catch it; the store's lock does.
    with pytest.raises(RuntimeError, match="already open for writing") as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "s"), tiny_callback(f"{tmp_path}/./s", layers="last")])
    one_line(e)


class Poison(L.Callback):
    """Makes the weights non-finite once the given optimizer step is reached."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.head.bias.fill_(float("nan"))


def test_non_finite_loglik_names_the_step(tmp_path):
    with pytest.raises(ValueError, match="trajectory snapshot at step 4: non-finite log-likelihood") as e:
        tiny_fit(tmp_path, [Poison(4), tiny_callback(tmp_path / "store")])
    one_line(e)
    assert TrajectoryStore.open(tmp_path / "store").steps.tolist() == [0, 2]  # a complete prefix


def test_writer_error_surfaces_on_the_training_thread(tmp_path):
    tiny_fit(tmp_path, [tiny_callback(tmp_path / "store", weights="sketch")], max_steps=2)
    # Resuming with another sketch size: the store refuses the write on the writer thread.
    with pytest.raises(ValueError, match="weight_sketch must be a finite 1-D array of length 4096") as e:
        tiny_fit(
            tmp_path,
            [tiny_callback(tmp_path / "store", weights="sketch", sketch_k=64, final=False)],
            max_steps=4,
        )
    one_line(e)


@pytest.mark.parametrize(
    "probe, error, message",
    [
        ("no/such/store", FileNotFoundError, "no such store folder or probe file"),
        ("parent", ValueError, "no probe given and NoneType has no held-out probe_texts"),  # no init_from
    ],
)
def test_bad_probe(tmp_path, probe, error, message):
    with pytest.raises(error, match=message) as e:
        tiny_fit(tmp_path, [tiny_callback(tmp_path / "store", probe=probe)], max_steps=2)
    one_line(e)


def test_parent_probe_falls_back_to_the_held_out_probe(tmp_path):
    dm = SimpleNamespace(probe_texts=SAMPLE_TEXTS[:4], hparams=SimpleNamespace(corpus="plays"))
    assert resolve_probe("parent", dm, None)[0].texts == SAMPLE_TEXTS[:4]  # a run that is no fine-tune
    (tmp_path / "hf").mkdir()  # a parent folder without a store beside it
    with pytest.warns(UserWarning, match="no trajectory store beside model.init_from"):
        probe, parent = resolve_probe("parent", dm, str(tmp_path / "hf"))
    assert probe.texts == SAMPLE_TEXTS[:4] and probe.name == "plays-heldout-4" and parent is None


def test_n_texts_cuts_only_the_held_out_probe(tmp_path):
    dm = SimpleNamespace(probe_texts=SAMPLE_TEXTS, hparams=SimpleNamespace(corpus="plays"))
    for spec in (None, "parent"):  # "parent" in a run that is no fine-tune: the held-out probe
        assert resolve_probe(spec, dm, None, n_texts=3)[0].texts == SAMPLE_TEXTS[:3]
    ProbeSet(SAMPLE_TEXTS).save(tmp_path / "p.json")
    for spec, init_from in (
        (str(tmp_path / "p.json"), None),
        ("parent", str(tmp_path / "hf")),
        ("default", None),
    ):
        with pytest.raises(ValueError, match="n_texts=3 cuts only the data module's held-out probe") as e:
            resolve_probe(spec, dm, init_from, n_texts=3)
        one_line(e)


def test_probe_from_a_store_or_a_file(tmp_path):
    tiny_fit(
        tmp_path, [tiny_callback(tmp_path / "a", probe=ProbeSet(SAMPLE_TEXTS[::-1], name="rev"))], max_steps=2
    )
    ProbeSet(SAMPLE_TEXTS[1:], name="file").save(tmp_path / "probe.json")
    tiny_fit(
        tmp_path,
        [
            tiny_callback(tmp_path / "b", probe=f"store:{tmp_path / 'a'}"),
            tiny_callback(tmp_path / "c", probe=str(tmp_path / "probe.json")),
        ],
        max_steps=2,
    )
    assert TrajectoryStore.open(tmp_path / "b").probe().texts == SAMPLE_TEXTS[::-1]
    assert TrajectoryStore.open(tmp_path / "c").probe().texts == SAMPLE_TEXTS[1:]


def test_tensorboard_gets_the_numbers_and_the_map(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # wandb runs disabled here (conftest): its logger takes the same calls without a network.
    loggers = [
        TensorBoardLogger(tmp_path, name="tb", version=0),
        WandbLogger(save_dir=tmp_path, offline=True),
    ]
    cb = tiny_callback(tmp_path / "store", map_every=3, weights="sketch")
    tiny_fit(tmp_path, [cb], logger=loggers)
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0}).Reload()
    store = TrajectoryStore.open(tmp_path / "store")
    kl_prev = {e.step: e.value for e in events.Scalars("traj/kl_prev")}
    ll = store.loglik(-1)
    assert sorted(kl_prev) == store.steps.tolist()[1:]
    for k in range(1, len(ll)):
        assert kl_prev[int(store.steps[k])] == pytest.approx(
            kl_direct(ll[k - 1], ll[k], store.n_bytes), rel=1e-6
        )
    images = events.Images("traj/map")
    assert [im.step for im in images] == [4, 6]  # after 3 snapshots (0, 2, 4), then at the end
    assert images[-1].width > 200 and (tmp_path / "store" / "trajectory_map.png").exists()
