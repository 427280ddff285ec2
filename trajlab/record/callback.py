"""TrajectoryCallback: record a run's trajectory into a TrajectoryStore while it trains, in any Lightning project.

At each scheduled optimizer step the callback scores the probe texts at every lens layer (``trajlab.lens``
``score_model``, the one scoring path; whole texts by default, ``long_texts="rolling"``), takes a weight
sketch and exact distances to the previous snapshots (``trajlab.sketch``), hands the arrays to a background
thread that appends them to the store, and logs KL numbers (``trajlab.analysis``) to the trainer's loggers.
Training is unchanged: scoring runs in eval mode under inference mode, and the train/eval flag of every module
and the torch (CPU and CUDA), numpy and Python random states are restored afterwards.

Steps are ``trainer.global_step`` (optimizer steps, so gradient accumulation is handled): step 0 is taken in
``on_train_start`` before any update, step s right after the s-th optimizer step, and the end of training in
``on_train_end`` (``final=True``).

The store is created at the first snapshot, when the scoring is known: its meta["scoring"] is that snapshot's
``ScoreInfo.scoring()`` (per-text scored tokens gathered from every rank), with ``warmup_steps`` (the module's
``hparams["warmup_steps"]``), ``max_steps`` (``trainer.max_steps``) and the lineage: a fine-tune (probe="parent",
or ``parent=STORE[@STEP]``) inherits its parent's root and names the parent snapshot.

``layers_every=k`` scores every lens layer at every k-th scheduled snapshot (schedule index 0, k, 2k, ...) and at
the last step of the run, and the model's output only at the others; each snapshot's manifest record lists its
layers, and ``store.full_layer_steps()`` / ``store.loglik_all(store.full_layer_steps())`` read the full ones.

Resume and DDP: see the `trajlab.record` package docstring.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from trajlab._options import UnknownOptionError, option_names
from trajlab.analysis.figures import save_figure
from trajlab.lens import score_model
from trajlab.record.live import MAP_FILE, snapshot_metrics, trajectory_map
from trajlab.record.probes import parent_lineage, resolve_probe
from trajlab.record.ranks import on_rank_zero, scores_across_ranks
from trajlab.record.schedule import snapshot_steps
from trajlab.record.settings import RecordConfig, callback_settings, checked_resume, store_meta
from trajlab.record.writer import Writer, training_state_preserved
from trajlab.scoring_config import ScoringConfig
from trajlab.sketch import WeightHistory, WeightSketch
from trajlab.store import TrajectoryStore, check_comparable, is_store
from trajlab.store.files import check_creatable


class TrajectoryCallback(L.Callback):
    """Record LL vectors (every lens layer), weight sketches and exact weight distances at scheduled steps.

    Args:
        out_dir: the store folder; None for ``<trainer.default_root_dir>/trajectory`` (the CLI's ``--run_dir``).
        record: what to record and when (`RecordConfig`: probe, schedule, layers, layers_every, weights,
            parent, the map; a dict of its fields works too, as YAML gives it).
        scoring: how the probe is scored (`ScoringConfig`: long_texts, stride, max_length, lens_dtype,
            prefix_bos, batch_size; or a dict).
        model: the transformers causal LM or `trajlab.lens.LensAdapter` to score, or the name of a pl_module
            attribute holding it; default ``pl_module.model``.
        tokenizer: default ``pl_module.tokenizer``, else the data module's ``tokenizer``.
        **options: fields of RecordConfig or ScoringConfig, changing `record` / `scoring`
            (``TrajectoryCallback(probe="default", schedule="every:5", long_texts="truncate")``).

    Raises:
        ValueError: a setting that cannot work, before any training (one line).
        UnknownOptionError: an option that is no field of either (a TypeError and a ValueError).

    Attributes:
        record, scoring: the options in force.
        timings: {"snapshots", "callback_s" (training-thread time in this callback), "score_s" (scoring only)}.
    """

    def __init__(
        self,
        out_dir: str | None = None,
        record: RecordConfig | None = None,
        scoring: ScoringConfig | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        **options,
    ):
        record = RecordConfig(**record) if isinstance(record, Mapping) else record or RecordConfig()
        scoring = ScoringConfig(**scoring) if isinstance(scoring, Mapping) else scoring or ScoringConfig()
        names = option_names(ScoringConfig)
        if unknown := sorted(set(options) - names - option_names(RecordConfig)):
            raise UnknownOptionError(f"unknown TrajectoryCallback option(s) {unknown}: pass fields of "
                                     "RecordConfig or ScoringConfig")
        self.scoring = scoring.replace(**{k: v for k, v in options.items() if k in names})
        self.record = record.replace(**{k: v for k, v in options.items() if k not in names})
        self.out_dir, self.model, self.tokenizer = out_dir, model, tokenizer
        self.timings = {"snapshots": 0, "callback_s": 0.0, "score_s": 0.0}
        self._restored: dict | None = None
        self._writer: Writer | None = None
        self._store: TrajectoryStore | None = None
        self._rows: list[tuple[int, np.ndarray]] = []  # (step, (N,) last-layer LL) of the trajectory so far

    @property
    def state_key(self) -> str:
        return self._generate_state_key(out_dir=None if self.out_dir is None else str(self.out_dir))

    def state_dict(self) -> dict:
        path = getattr(self, "_path", None)
        return {"out_dir": str(path.resolve()) if path else None, "steps": [s for s, _ in self._rows]}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state

    # ---- set-up ----

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._path = (
            Path(self.out_dir) if self.out_dir is not None else Path(trainer.default_root_dir) / "trajectory"
        )
        init_from = getattr(getattr(pl_module, "hparams", None), "init_from", None)
        rec = self.record
        self._probe, self._parent = resolve_probe(rec.probe, trainer.datamodule, init_from, rec.n_texts)
        if len(self._probe) < max(2, trainer.world_size):
            raise ValueError(f"the probe has {len(self._probe)} texts; KL needs >= 2 and DDP one per rank")
        self._lineage = self._parent_meta = None
        spec = rec.parent
        if spec is None and self._parent and self._parent["step"] is not None:  # probe="parent"
            spec = f"{self._parent['store']}@{self._parent['step']}"  # (a parent without snapshots: no lineage)
        if spec:  # refuses a parent scored another way (truncated vs whole texts) before training starts
            self._lineage, self._parent, self._parent_meta = parent_lineage(
                spec, self._probe.fingerprint, self.scoring.long_texts, f"this run ({self._path})"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        t0 = time.perf_counter()
        model, dm = self.model, trainer.datamodule
        self._model = (
            getattr(pl_module, model or "model", None) if model is None or isinstance(model, str) else model
        )
        self._tok = self.tokenizer or getattr(pl_module, "tokenizer", None) or getattr(dm, "tokenizer", None)
        if self._model is None or self._tok is None:
            raise ValueError(
                f"TrajectoryCallback found no {'model' if self._model is None else 'tokenizer'} on "
                f"{type(pl_module).__name__}: pass model=... and tokenizer=... explicitly"
            )
        self._module = self._model if isinstance(self._model, torch.nn.Module) else pl_module
        max_steps = trainer.max_steps if trainer.max_steps >= 0 else trainer.estimated_stepping_batches
        if not np.isfinite(max_steps):
            raise ValueError("TrajectoryCallback needs a finite run: set trainer.max_steps or max_epochs")
        start, self._max_steps = trainer.global_step, int(max_steps)
        order = snapshot_steps(self.record.schedule, int(max_steps))
        self._todo = {s: i for i, s in enumerate(order) if s >= start}  # step -> index in the schedule
        self._rows, self._last_step, self._drawn, self._warned = [], None, 0, False
        with training_state_preserved(self._module), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation warnings; the real snapshots report them
            one = self._probe.texts[:1]
            _, info = score_model(self._model, self._tok, one, "last", scoring=self.scoring, return_info=True)
        start_stored = on_rank_zero(
            trainer, "opening the store", self._open, trainer, pl_module, info.n_layers, order
        )
        if trainer.strategy.broadcast(start_stored):
            self._todo.pop(start, None)
            self._last_step = start
        self.timings["callback_s"] += time.perf_counter() - t0
        self._maybe_snapshot(trainer, pl_module)

    def _open(self, trainer: L.Trainer, pl_module: L.LightningModule, n_layers: int, order: list[int]) -> bool:
        """Rank zero: open the store (or check that it can be created at the first snapshot) and pick up what it
        holds; True if the start step needs no scoring."""
        settings = callback_settings(self.record, self.scoring, trainer.world_size)
        run = self.record.run_name or Path(trainer.default_root_dir).resolve().name
        max_steps = trainer.max_steps if trainer.max_steps >= 0 else None
        self._meta = store_meta(
            run, pl_module, self._model, self._tok, settings, self._parent,
            max_steps=max_steps, lineage=self._lineage,
        )  # fmt: skip
        self._n_layers, self._scoring_checked = n_layers, False
        store = None
        if is_store(self._path):
            store = TrajectoryStore.open_or_create(
                self._path, probe=self._probe, meta=self._meta, n_layers=n_layers
            )
        else:
            check_creatable(self._path)  # fail before training, not at the first snapshot
        try:
            steps, start = [int(s) for s in store.steps] if store else [], trainer.global_step
            rows = store.loglik(-1) if store else np.empty((0, len(self._probe)))  # (K, N)
            restored = checked_resume(self._path, self._restored, steps, order, start)
        except BaseException:
            if store is not None:
                store.close()
            raise
        # The checkpoint's state names its own step when that step was snapshotted: the same weights, not rescored.
        certified = bool(restored) and start in restored["steps"]
        self._rows = [(s, r) for s, r in zip(steps, rows) if s < start or (s == start and certified)]
        self._stored = {s: r for s, r in zip(steps, rows) if s >= start and not (s == start and certified)}
        self._last_stored = steps[-1] if steps else -1
        self._sketch = self._history = None
        if self.record.weights != "none":
            self._sketch = WeightSketch(self.record.sketch_k)
            self._history = WeightHistory(self.record.window)
            if certified:
                self._history.push(start, self._module)
        self._store, self._writer = store, Writer(self.record.queue_size)
        return certified

    # ---- snapshots ----

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._maybe_snapshot(trainer, pl_module)  # global_step already counts this batch's optimizer step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step in self._todo or (self.record.final and step != self._last_step):
            self._snapshot(trainer, pl_module, step, self._todo.pop(step, None), end=True)
        t0 = time.perf_counter()
        if trainer.is_global_zero:
            if len(self._rows) > self._drawn:
                self._draw_map(trainer, step)
            self._close(quiet=False)
        self.timings["callback_s"] += time.perf_counter() - t0

    def _maybe_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step  # fires once per optimizer step: the step leaves _todo
        if step in self._todo:
            self._snapshot(trainer, pl_module, step, self._todo.pop(step))

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, index: int | None,
                  end: bool = False) -> None:  # fmt: skip
        t0 = time.perf_counter()
        every = index is not None and index % self.record.layers_every == 0
        self._layers_now = (
            "all" if self.record.layers == "all" and (every or end or step == self._max_steps) else "last"
        )
        with training_state_preserved(self._module):
            scored = scores_across_ranks(  # (R + 1, N) on every rank: LL rows, then scored tokens per text
                self._score_texts, self._probe.texts, trainer.global_rank, trainer.world_size, trainer.strategy, step
            )  # fmt: skip
        score_s = time.perf_counter() - t0
        self._last_step = step
        ll, n_tokens = scored[:-1], [int(n) for n in scored[-1]]
        scoring = self._info.scoring() | {"n_tokens": n_tokens}
        on_rank_zero(
            trainer, f"recording step {step}", self._record, trainer, step, index, ll, score_s, scoring
        )
        self.timings["snapshots"] += 1
        self.timings["score_s"] += score_s
        self.timings["callback_s"] += time.perf_counter() - t0

    def _score_texts(self, texts: list[str]) -> np.ndarray:
        """(R + 1, len(texts)): the LL rows, then the scored tokens of each text; the scorer's warnings (e.g.
        truncation) are shown at the first snapshot only."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ll, self._info = score_model(
                self._model, self._tok, texts, self._layers_now, scoring=self.scoring, return_info=True
            )
        if not self._warned:
            self._warned = True
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return np.vstack([ll, np.asarray(self._info.n_tokens, dtype=np.float64)])

    def _record(
        self, trainer: L.Trainer, step: int, index: int | None, ll: np.ndarray, score_s: float, scoring: dict
    ) -> None:
        """Rank zero: hand the snapshot to the writer (or verify a replayed one) and log its numbers."""
        store, last, dists = self._store_for(scoring), ll[-1], {}
        if step in self._stored:  # written before a crash, replayed by the resumed run
            diff = float(np.abs(last - self._stored.pop(step)).max())
            self._writer.submit(lambda: store.add_note("replay", {"step": step, "max_abs_diff": diff}))
            if diff > 0:
                warnings.warn(
                    f"step {step} replayed after resume differs from the stored snapshot by up to {diff:.3g} "
                    "nats; the stored one is kept",
                    stacklevel=2,
                )
            if self._history is not None:
                self._history.push(step, self._module)
        elif step <= self._last_stored:
            warnings.warn(
                f"step {step} is not recorded: {self._path} already holds the later step {self._last_stored}",
                stacklevel=2,
            )
            return
        else:
            sketch = full = None
            if self._history is not None:
                sketch, dists = self._sketch.sketch(self._module), self._history.push(step, self._module)
            if self.record.weights == "full" and (index is None or index % self.record.full_every == 0):
                full = {
                    n: p.detach().to("cpu", torch.float32, copy=True).numpy()
                    for n, p in self._module.named_parameters()
                }
            info = {"score_s": round(score_s, 4), "world_size": trainer.world_size}
            layers = None if len(ll) > 1 else [-1]
            self._writer.submit(lambda: store.append(
                step, ll, layers=layers, probe_fingerprint=self._probe.fingerprint, source="callback",
                weight_sketch=sketch, sq_dists=dists if sketch is not None else None, full_weights=full, info=info,
            ))  # fmt: skip
            self._last_stored = step
        metrics = snapshot_metrics(
            ll, [r for _, r in self._rows[:1] + self._rows[-1:]], self._probe.n_bytes, dists
        )
        metrics["traj/score_s"] = score_s
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self._rows.append((step, last))
        if self.record.map_every and len(self._rows) - self._drawn >= self.record.map_every:
            self._draw_map(trainer, step)

    def _store_for(self, scoring: dict) -> TrajectoryStore:
        """The store, created at the first snapshot with its scoring; a reopened one must be scored alike."""
        if self._store is None:
            meta = self._meta | {"scoring": scoring}
            if self._parent_meta is not None:  # the full scoring is known now: warn on other settings
                here = f"this run ({self._path})"
                check_comparable([(self._parent["store"], self._parent_meta), (here, meta)])
            self._store = TrajectoryStore.open_or_create(
                self._path, probe=self._probe, meta=meta, n_layers=self._n_layers
            )
            self._scoring_checked = True
        elif not self._scoring_checked:
            if problem := self._store.mismatch(scoring=scoring):
                raise ValueError(f"cannot resume {self._path}: {problem}; record into a new out_dir")
            self._scoring_checked = True
        return self._store

    def _draw_map(self, trainer: L.Trainer, step: int) -> None:
        """PCA map of the trajectory so far: saved into the store (by the writer) and logged as an image."""
        self._drawn = len(self._rows)
        if len(self._rows) >= 3:
            title = f"{self._path.parent.name or 'run'}, step {step}"
            fig = trajectory_map(self._rows, self._probe.n_bytes, title, trainer.loggers)
            self._writer.submit(lambda: save_figure(fig, self._path / MAP_FILE))

    # ---- flushing and closing ----

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        t0 = time.perf_counter()  # the checkpoint may name only snapshots that are on disk
        on_rank_zero(trainer, "writing snapshots", lambda: self._writer and self._writer.flush())
        self.timings["callback_s"] += time.perf_counter() - t0

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close(quiet=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close(quiet=True)

    def _close(self, quiet: bool) -> None:
        """Write what is queued, stop the writer and release the store; `quiet` turns a writer error into a warning."""
        writer, store, self._writer, self._store = self._writer, self._store, None, None
        try:
            if writer is not None:
                writer.close()
        except Exception as e:
            if not quiet:
                raise
            warnings.warn(f"the trajectory writer failed: {type(e).__name__}: {e}", stacklevel=2)
        finally:
            if store is not None:
                store.close()
