"""Lightning pieces: a packed-sequence data module and a causal-LM module for pretraining and fine-tuning.

``LMDataModule`` owns the corpus split and the tokenizer (trained on the train split, or loaded from the model
being fine-tuned); ``LitLM`` owns the transformers model and builds it in ``configure_model`` from the data
module's tokenizer, so one YAML recipe describes a run. Batches are a pure function of (seed, epoch, position), and
the train loader is resumable mid-epoch, so a resumed ``fit`` reproduces an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trajlab.data import corpus as corpora
from trajlab._io import write_atomic
from trajlab.train.models import build_model, preset_meta
from trajlab.data.tokenizer import cache_root, load_tokenizer, tokenizer_fingerprint, tokenizer_meta, train_tokenizer


class _Blocks(Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks  # (n_blocks, seq_len) int64

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]}


def mixture_order(sizes: list[int], weights: list[float], *, seed: int, epoch: int) -> torch.Tensor:
    """One epoch of block indices over domains whose blocks are concatenated (domain d: ``sizes[d]`` blocks).

    An epoch has sum(sizes) blocks; domain d contributes ``corpora.mixture_counts`` of them in proportion to
    ``weights[d]``, drawn as seeded permutations of its blocks, repeated when it is upsampled; the draws are then
    shuffled together. One domain: a seeded permutation of its blocks. A pure function of (seed, epoch).

    Returns:
        (sum(sizes),) int64 indices into the concatenated blocks.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    total = sum(sizes)
    if len(sizes) == 1:
        return torch.randperm(total, generator=g)
    counts = corpora.mixture_counts(dict(enumerate(weights)), total)
    offsets = [sum(sizes[:d]) for d in range(len(sizes))]
    draws = []
    for d, n in enumerate(sizes):
        perms = [torch.randperm(n, generator=g) for _ in range(-(-counts[d] // n))]  # ceil(count / n) passes
        draws.append(torch.cat(perms)[: counts[d]] + offsets[d] if perms else torch.empty(0, dtype=torch.int64))
    drawn = torch.cat(draws)
    return drawn[torch.randperm(total, generator=g)]


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation (or mixture draw, see `mixture_order`), sharded across ranks, that can start
    mid-epoch after a restore. Unshuffled: the blocks in order, or one fixed mixture draw (seed 0, epoch 0)."""

    def __init__(
        self, n: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
        mixture: tuple[list[int], list[float]] | None = None,
    ):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.mixture = mixture  # (blocks per domain, weight per domain), or None for one domain
        self.epoch = 0
        self.start = 0  # index (within this rank's share) to resume from

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self):
        sizes, weights = self.mixture or ([self.n], [1.0])
        if self.shuffle:
            order = mixture_order(sizes, weights, seed=self.seed, epoch=self.epoch)
        elif self.mixture:
            order = mixture_order(sizes, weights, seed=0, epoch=0)
        else:
            order = torch.arange(self.n)
        mine = order[self.rank : len(self) * self.world_size : self.world_size].tolist()
        start, self.start = self.start, 0
        yield from mine[start:]


class ResumableLoader(DataLoader):
    """A DataLoader whose position is saved in Lightning checkpoints (Lightning calls state_dict/load_state_dict).

    Lightning does not pre-fetch from loaders with a length, so the batches produced are the batches consumed.
    """

    def __init__(self, dataset, *, batch_size: int, sampler: ResumableSampler):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
        self._produced = 0

    def __iter__(self):
        self._produced = self.sampler.start // self.batch_size
        for batch in super().__iter__():
            self._produced += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "consumed_batches": self._produced}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.start = state["consumed_batches"] * self.batch_size


class LMDataModule(L.LightningDataModule):
    """Packed next-token batches from a bundled or user corpus, or a weighted mixture of corpora.

    Each domain is packed on its own, so every block belongs to one domain; a mixture's epoch draws blocks in the
    mixture's proportions (`mixture_order`), so the trained tokens follow the weights. The held-out probe is drawn
    in the same proportions from the domains' held-out pools (`corpora.mixture_probe`) with each text's domain.

    Args:
        corpus: a bundled name (``shakespeare``, ``bible``, ``docs``), a .txt file or folder, a .jsonl file, a
            ``datasets`` dataset saved to disk, or a mixture ``{corpus: weight}`` of those (weights normalised;
            YAML ``corpus: {shakespeare: 0.6, bible: 0.3, docs: 0.1}``, CLI ``--data.corpus "{bible: 1}"``).
        text_field: the text field of JSONL / dataset corpora.
        tokenizer: a ``save_pretrained`` folder to take the tokenizer from; ``None`` trains a byte-level BPE on
            the train split (cached by content hash). The CLI links this to ``model.init_from`` for fine-tuning.
        vocab_size: size of the trained BPE (trained on the train splits of all the mixture's corpora).
        seq_len: tokens per packed training sequence.
        batch_size: sequences per batch (per device).
        n_probe: held-out probe chunks (paper's recipe: <= 1024 bytes, > 256 bytes, seeded sample), split over a
            mixture's corpora in its proportions.
        val_fraction: share of the remaining chunks held out for validation.
        split_seed: seed of the train / val / probe split.
        seed: seed of the batch order.
    """

    def __init__(
        self,
        corpus: dict[str, float] | str = "shakespeare",
        text_field: str = "text",
        tokenizer: str | None = None,
        vocab_size: int = 4096,
        seq_len: int = 128,
        batch_size: int = 16,
        n_probe: int = 256,
        val_fraction: float = 0.05,
        split_seed: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.weights = corpora.mixture_weights(corpus)  # {source: weight}, fails early on a bad mixture
        self.domains = [corpora.domain_name(s) for s in self.weights]
        self.tokenizer = None
        self.probe_texts: list[str] = []
        self.probe_domains: list[str] = []
        self.block_domains: dict[str, torch.Tensor] = {}  # split -> (n_blocks,) index into self.domains
        self._train = self._val = None
        self._sizes: dict[str, list[int]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        hp = self.hparams
        counts = corpora.mixture_counts(self.weights, hp.n_probe)
        splits = [
            corpora.load_splits(
                source, seed=hp.split_seed, n_probe=counts[source], val_fraction=hp.val_fraction,
                text_field=hp.text_field,
            )
            for source in self.weights
        ]
        if self.tokenizer is None:
            self.tokenizer = (
                load_tokenizer(hp.tokenizer) if hp.tokenizer
                else train_tokenizer([t for s in splits for t in s.train], hp.vocab_size)
            )
        self.probe_texts, self.probe_domains = corpora.mixture_probe(
            self.weights, hp.n_probe, seed=hp.split_seed, text_field=hp.text_field
        )
        for split in ("train", "val"):
            blocks = [self._pack(getattr(s, split), source) for s, source in zip(splits, self.weights, strict=True)]
            self._sizes[split] = [len(b) for b in blocks]
            self.block_domains[split] = torch.cat(
                [torch.full((len(b),), d, dtype=torch.int64) for d, b in enumerate(blocks)]
            )
            setattr(self, f"_{split}", _Blocks(torch.cat(blocks)))

    def _pack(self, texts: list[str], source: str) -> torch.Tensor:
        """Concatenate the token streams of ``texts`` and cut them into (n, seq_len) blocks.

        Blocks are cached under ``cache_root()/blocks`` by (tokenizer fingerprint, seq_len, texts' fingerprint):
        runs of one tokenizer on one corpus (seeds, fine-tunes) tokenize it once.
        """
        seq_len = self.hparams.seq_len
        key = hashlib.sha256(
            f"blocks-v1|{tokenizer_fingerprint(self.tokenizer)}|{seq_len}|{corpora.corpus_fingerprint(texts)}".encode()
        ).hexdigest()[:24]
        cached = cache_root() / "blocks" / f"{key}.pt"
        if cached.exists():
            return torch.load(cached, weights_only=True)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        flat = torch.tensor([t for seq in ids for t in seq], dtype=torch.int64)
        n = len(flat) // seq_len
        if n < 1:
            raise ValueError(
                f"corpus {source!r} yields {len(flat)} tokens in a split, fewer than one sequence of "
                f"seq_len={seq_len}: use a larger corpus or a smaller seq_len"
            )
        blocks = flat[: n * seq_len].view(n, seq_len)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, lambda tmp: torch.save(blocks, tmp))
        return blocks

    def _loader(self, data: _Blocks, split: str, shuffle: bool) -> ResumableLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sizes = self._sizes[split]
        mixture = (sizes, list(self.weights.values())) if len(sizes) > 1 else None
        sampler = ResumableSampler(
            len(data), seed=self.hparams.seed, shuffle=shuffle, rank=rank, world_size=world, mixture=mixture
        )
        if len(sampler) < self.hparams.batch_size:
            raise ValueError(
                f"a split has {len(sampler)} sequences per device, fewer than batch_size={self.hparams.batch_size}"
            )
        return ResumableLoader(data, batch_size=self.hparams.batch_size, sampler=sampler)

    def train_dataloader(self) -> ResumableLoader:
        return self._loader(self._train, "train", shuffle=True)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader(self._val, "val", shuffle=False)


class LitLM(L.LightningModule):
    """Causal-LM training of a transformers model (pretraining from a preset, or fine-tuning a checkpoint).

    Args:
        preset: a name in ``trajlab.train.models.PRESETS`` (ignored when ``init_from`` is given).
        context_length: the model's context (positions) for presets.
        init_from: a ``save_pretrained`` folder (a trajlab export or any HF causal LM) to fine-tune.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay on matrices (not on biases and norms).
        betas: AdamW betas.
        warmup_steps: linear warm-up steps, then cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: floor of the cosine schedule.
    """

    def __init__(
        self,
        preset: str = "tiny",
        context_length: int = 256,
        init_from: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters()
        if init_from is None:
            preset_meta(preset)  # fails early, with the list of presets, on a typo
        elif not Path(init_from).is_dir():
            raise FileNotFoundError(f"init_from={init_from!r} is not a directory: pass a save_pretrained folder")
        self.model = None
        self.tokenizer = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.tokenizer is None:
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or dm.tokenizer is None:
                raise ValueError("LitLM needs a tokenizer: use LMDataModule or set module.tokenizer before fit")
            self.tokenizer = dm.tokenizer
        hp = self.hparams
        if hp.init_from:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(hp.init_from).train()  # loads in eval mode: dropout off
            rows = model.get_input_embeddings().num_embeddings
            if rows < len(self.tokenizer):
                raise ValueError(
                    f"model {hp.init_from} has {rows} embedding rows but the tokenizer has {len(self.tokenizer)} "
                    "ids: fine-tune with the tokenizer saved beside that model"
                )
        else:
            model = build_model(hp.preset, len(self.tokenizer), hp.context_length)
        self.model = model

    def run_meta(self) -> dict:
        """What identifies this model in a trajectory store."""
        return {
            "model": {"class": type(self.model).__name__, **self.model.config.to_diff_dict()},
            "tokenizer": tokenizer_meta(self.tokenizer),
            "preset": None if self.hparams.init_from else self.hparams.preset,
            "init_from": self.hparams.init_from,
        }

    def _loss(self, batch: dict) -> torch.Tensor:
        ids = batch["input_ids"]
        return self.model(input_ids=ids, labels=ids).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: lower model.lr or use "
                "trainer.precision=32"
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=tuple(hp.betas),
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warm = min(hp.warmup_steps, total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min((step - warm) / max(total - warm, 1), 1.0)
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def export_hf(model, tokenizer, out_dir: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer into ``out_dir``, atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=out_dir.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir


class HFExport(L.Callback):
    """Export the trained model and its tokenizer as a ``save_pretrained`` folder at the end of ``fit``.

    Args:
        dirpath: target folder; default ``<trainer.default_root_dir>/hf``.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            export_hf(pl_module.model, pl_module.tokenizer, self.dirpath or Path(trainer.default_root_dir) / "hf")
