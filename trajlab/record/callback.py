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
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from trajlab.analysis.figures import save_figure
from trajlab.lens import score_model
from trajlab.data.probe import ProbeSet
from trajlab.record.probes import parent_lineage, resolve_probe
from trajlab.record.ranks import on_rank_zero, scores_across_ranks
from trajlab.record.schedule import snapshot_steps
from trajlab.record.settings import (
    MAP_FILE, SETTINGS, check_settings, checked_resume, snapshot_metrics, store_meta, trajectory_map,
)  # fmt: skip
from trajlab.record.writer import Writer, training_state_preserved
from trajlab.sketch import WeightHistory, WeightSketch
from trajlab.store import TrajectoryStore, check_comparable, is_store
from trajlab.store.files import check_creatable



class TrajectoryCallback(L.Callback):
    """Record LL vectors (every lens layer), weight sketches and exact weight distances at scheduled steps.

    Args:
        out_dir: the store folder; None for ``<trainer.default_root_dir>/trajectory`` (the CLI's ``--run_dir``).
        probe: what to score (see `trajlab.record.probes.resolve_probe`): None (the data module's held-out probe
            texts), "default", "parent" (the pretraining store's probe, for fine-tuning), a store folder
            ("store:PATH" or PATH), a ProbeSet file, or a ProbeSet. The probe is saved in the store, so a later
            run can reuse it.
        schedule: "pythia[:SCALE]", "log[:N]", "every:N" or a list of steps (see `trajlab.record.schedule`).
        layers: "all" (embedding output, each block, model output) or "last" (the model's output only).
        weights: "sketch" (WeightSketch + exact squared distances to the previous `window` snapshots), "full"
            (the same, plus all parameters as safetensors at every `full_every`-th scheduled snapshot and at the
            end), or "none".
        n_texts: score only the first n_texts of the data module's held-out probe (a seeded random sample,
            so its first texts are one too); only with that probe (probe None, or "parent" in a run that is no
            fine-tune), since cutting a shared probe would make runs incomparable.
        tokenizer: default ``pl_module.tokenizer``, else the data module's ``tokenizer``.
        model: the transformers causal LM or `trajlab.lens.LensAdapter` to score, or the name of a pl_module
            attribute holding it; default ``pl_module.model``.
        final: also snapshot the end of training when it is not a scheduled step.
        full_every: see `weights`.
        sketch_k: weight sketch dimension.
        window: previous snapshots each one gets an exact weight distance to.
        batch_size: texts per scoring forward.
        max_length: the scoring window C (tokens); default the model's context length.
        long_texts: a text longer than the window is scored whole with a sliding window ("rolling"), cut at
            the window ("truncate", as version-1 stores were) or refused ("error"); see `score_model`.
        stride: the sliding window's stride in tokens (default C // 2).
        lens_dtype: dtype of the lens GEMMs (None: the model's; "float32", "bfloat16", "auto").
        layers_every: with layers="all", score every lens layer at every layers_every-th scheduled snapshot
            and at the run's last step, and the model's output only at the others.
        parent: the store this run continues from, "PATH" (its last snapshot) or "PATH@STEP", for the lineage
            (default: with probe="parent", the store the probe came from).
        map_every: redraw the PCA map of the trajectory (``<store>/trajectory_map.png``, and an image for
            TensorBoard / wandb loggers) every this many snapshots and at the end; 0: only at the end.
        run_name: the store's meta["run"]; default the name of ``trainer.default_root_dir``.
        queue_size: snapshots waiting for the writer thread before training waits.

    Attributes:
        timings: {"snapshots", "callback_s" (training-thread time in this callback), "score_s" (scoring only)}.
    """

    def __init__(
        self,
        out_dir: str | None = None,
        probe: ProbeSet | str | None = None,
        schedule: str | list[int] = "pythia",
        layers: Literal["all", "last"] = "all",
        weights: Literal["sketch", "full", "none"] = "sketch",
        *,
        n_texts: int | None = None,
        tokenizer: Any = None,
        model: Any = None,
        final: bool = True,
        full_every: int = 4,
        sketch_k: int = 4096,
        window: int = 10,
        batch_size: int = 8,
        max_length: int | None = None,
        long_texts: Literal["rolling", "truncate", "error"] = "rolling",
        stride: int | None = None,
        lens_dtype: str | None = None,
        layers_every: int = 1,
        parent: str | None = None,
        map_every: int = 10,
        run_name: str | None = None,
        queue_size: int = 4,
    ):
        check_settings(layers, weights, long_texts, layers_every, full_every, window, batch_size, queue_size,
                       n_texts, map_every)  # fmt: skip
        snapshot_steps(schedule, 1)  # a bad spec fails here, before training
        self.out_dir, self.probe, self.n_texts, self.schedule = out_dir, probe, n_texts, schedule
        self.layers, self.weights, self.tokenizer, self.model = layers, weights, tokenizer, model
        self.final, self.full_every, self.sketch_k, self.window = final, full_every, sketch_k, window
        self.batch_size, self.max_length, self.map_every = batch_size, max_length, map_every
        self.long_texts, self.stride, self.lens_dtype = long_texts, stride, lens_dtype
        self.layers_every, self.parent = layers_every, parent
        self.run_name, self.queue_size = run_name, queue_size
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
        self._probe, self._parent = resolve_probe(self.probe, trainer.datamodule, init_from, self.n_texts)
        if len(self._probe) < max(2, trainer.world_size):
            raise ValueError(f"the probe has {len(self._probe)} texts; KL needs >= 2 and DDP one per rank")
        self._lineage = self._parent_meta = None
        spec = self.parent
        if spec is None and self._parent and self._parent["step"] is not None:  # probe="parent"
            spec = f"{self._parent['store']}@{self._parent['step']}"  # (a parent without snapshots: no lineage)
        if spec:  # refuses a parent scored another way (truncated vs whole texts) before training starts
            self._lineage, self._parent, self._parent_meta = parent_lineage(
                spec, self._probe.fingerprint, self.long_texts, f"this run ({self._path})"
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
        order = snapshot_steps(self.schedule, int(max_steps))
        self._todo = {s: i for i, s in enumerate(order) if s >= start}  # step -> index in the schedule
        self._rows, self._last_step, self._drawn, self._warned = [], None, 0, False
        with training_state_preserved(self._module), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation warnings; the real snapshots report them
            one = self._probe.texts[:1]
            _, info = score_model(self._model, self._tok, one, "last", **self._score_opts(), return_info=True)
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
        settings = {k: getattr(self, k) for k in SETTINGS} | {"world_size": trainer.world_size}
        run = self.run_name or Path(trainer.default_root_dir).resolve().name
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
        if self.weights != "none":
            self._sketch, self._history = WeightSketch(self.sketch_k), WeightHistory(self.window)
            if certified:
                self._history.push(start, self._module)
        self._store, self._writer = store, Writer(self.queue_size)
        return certified

    # ---- snapshots ----

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._maybe_snapshot(trainer, pl_module)  # global_step already counts this batch's optimizer step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step in self._todo or (self.final and step != self._last_step):
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
        every = index is not None and index % self.layers_every == 0
        self._layers_now = (
            "all" if self.layers == "all" and (every or end or step == self._max_steps) else "last"
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

    def _score_opts(self) -> dict:
        keys = ("max_length", "long_texts", "stride", "lens_dtype")
        return {k: getattr(self, k) for k in keys}

    def _score_texts(self, texts: list[str]) -> np.ndarray:
        """(R + 1, len(texts)): the LL rows, then the scored tokens of each text; the scorer's warnings (e.g.
        truncation) are shown at the first snapshot only."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opts = {"batch_size": self.batch_size, **self._score_opts(), "return_info": True}
            ll, self._info = score_model(self._model, self._tok, texts, self._layers_now, **opts)
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
            if self.weights == "full" and (index is None or index % self.full_every == 0):
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
        if self.map_every and len(self._rows) - self._drawn >= self.map_every:
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
