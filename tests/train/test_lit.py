"""Lightning training: debug fit, fine-tune from it, exact resume, and each bad input."""

import csv
import json
import math
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch

from trajlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def fit(run_dir, *extra):
    return main(["fit", "--config", DEBUG, "--run_dir", str(run_dir), *extra])


def fit_error(capsys, run_dir, *extra) -> str:
    """A fit that fails on a user mistake: exit code 2 and one ``error: ...`` line on stderr (beside transformers'
    progress bars), which is returned."""
    assert fit(run_dir, *extra) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


def val_losses(run_dir) -> list[float]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]


def weights(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def ckpt_weights(path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in sd.items()}


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("debug")
    assert fit(run) == 0
    return run


def eval_loss(model_dir, corpus_name: str, n_texts: int = 8) -> float:
    """Mean next-token loss of a save_pretrained model on a corpus's validation texts, computed directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trajlab.data import corpus

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    for text in corpus.load_splits(corpus_name).val[:n_texts]:
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"][:64])[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        total -= logp.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    return total / count


def test_debug_fit_learns_and_exports(debug_run):
    losses = val_losses(debug_run)
    assert len(losses) == 2 and losses[-1] < losses[0] < math.log(512)
    # The HF export is exactly the final Lightning checkpoint's weights.
    final = ckpt_weights(debug_run / "checkpoints" / "last.ckpt")
    exported = weights(debug_run / "hf")
    assert set(final) == set(exported)
    for k in final:
        assert torch.equal(final[k], exported[k]), k
    assert json.loads((debug_run / "hf" / "config.json").read_text())["model_type"] == "gpt_neox"


def test_finetune_from_debug_run(debug_run, tmp_path):
    ft = tmp_path / "ft"
    assert main(["fit", "--config", DEBUG, "--run_dir", str(ft), "--model.init_from", str(debug_run / "hf"),
                 "--data.corpus", "bible", "--trainer.max_steps", "10"]) == 0
    base, tuned = weights(debug_run / "hf"), weights(ft / "hf")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    assert (ft / "hf" / "tokenizer.json").read_text() == (debug_run / "hf" / "tokenizer.json").read_text()
    # Fine-tuning on the Bible lowers the loss on held-out Bible text relative to the base model.
    assert eval_loss(ft / "hf", "bible") < eval_loss(debug_run / "hf", "bible") - 0.05


def test_resume_mid_epoch_reproduces_uninterrupted_run(debug_run, tmp_path):
    # Resume the same recipe from its step-10 checkpoint (mid-epoch) in a fresh folder; it must end bitwise equal.
    resumed = tmp_path / "resumed"
    assert fit(resumed, "--ckpt_path", str(debug_run / "checkpoints" / "epoch=0-step=10.ckpt")) == 0
    a, b = ckpt_weights(debug_run / "checkpoints" / "last.ckpt"), ckpt_weights(resumed / "checkpoints" / "last.ckpt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_unknown_preset(tmp_path, capsys):
    assert "unknown model preset 'huge'" in fit_error(capsys, tmp_path, "--model.preset", "huge")


def test_unknown_config_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fit(tmp_path, "--model.no_such_key", "1")
    assert e.value.code != 0
    assert "no_such_key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, field, message",
    [("", "text", "empty|no text"), ('{"body": "some words here"}\n', "text", "text")],
)
def test_bad_corpus(tmp_path, capsys, content, field, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    error = fit_error(capsys, tmp_path / "run", "--data.corpus", str(path), "--data.text_field", field)
    assert re.search(message, error)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_corpus(tmp_path, capsys):
    assert "nope.txt" in fit_error(capsys, tmp_path / "run", "--data.corpus", str(tmp_path / "nope.txt"))


def test_finetune_source_with_smaller_vocab(tmp_path, capsys, debug_run):
    from transformers import AutoTokenizer

    from trajlab.train.models import build_model

    src = tmp_path / "small"
    build_model("nano", vocab_size=100, context_length=64).save_pretrained(src)
    AutoTokenizer.from_pretrained(debug_run / "hf").save_pretrained(src)  # 512 ids > 100 rows
    assert re.search("100 embedding rows.*512", fit_error(capsys, tmp_path / "run", "--model.init_from", str(src)))


def test_non_finite_loss_names_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step \d+"):
        fit(tmp_path / "run", "--model.lr", "1e12", "--trainer.gradient_clip_val", "null")


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "not writable" in fit_error(capsys, blocker / "run")


# ---- corpus mixtures --------------------------------------------------------------------------------------------

ALPHABETS = {"ava": "abcde", "fig": "fghij", "kon": "klmno"}  # disjoint letters: a token's letters name its domain


def alphabet_corpora(folder: Path) -> dict[str, Path]:
    """Three JSONL corpora written in disjoint alphabets; every line carries a unique id spelled in its alphabet."""
    paths = {}
    for name, letters in ALPHABETS.items():
        def spelled(i: int, letters=letters) -> str:  # i in base 5, 7 digits
            return "".join(letters[i // 5**k % 5] for k in range(7))

        docs = [" ".join(f"{spelled(d * 500 + i)} {letters[i % 5] * (1 + i % 4)}" for i in range(500))
                for d in range(4)]
        docs = [textwrap.fill(doc, 60) for doc in docs]
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return paths


def domain_of(text: str) -> str | None:
    """The domain whose alphabet holds every letter of text (None for whitespace only); fails on a mix."""
    found = {name for name, letters in ALPHABETS.items() if set(text) & set(letters)}
    assert len(found) <= 1, f"a block mixes domains: {text!r}"
    return found.pop() if found else None


@pytest.fixture(scope="module")
def mixture_module(tmp_path_factory):
    from trajlab.train.lit import LMDataModule

    paths = alphabet_corpora(tmp_path_factory.mktemp("mix"))
    weights = {str(paths["ava"]): 0.5, str(paths["fig"]): 0.3, str(paths["kon"]): 0.2}
    dm = LMDataModule(corpus=weights, vocab_size=300, seq_len=16, batch_size=8, n_probe=20)
    dm.setup()
    return dm


def test_mixture_trains_on_the_mixtures_proportions(mixture_module):
    dm = mixture_module
    blocks = [row for batch in dm.train_dataloader() for row in batch["input_ids"]]  # one epoch, in order
    domains = [domain_of(dm.tokenizer.decode(b)) for b in blocks]
    counts = Counter(domains)
    assert None not in counts
    n = len(domains)
    for name, w in {"ava": 0.5, "fig": 0.3, "kon": 0.2}.items():
        assert abs(counts[name] / n - w) <= 8 / n  # exact per epoch, up to the last (dropped) partial batch
        early = Counter(domains[:400])[name] / 400  # and well mixed: the first 400 blocks already near the weights
        assert abs(early - w) < 0.08, (name, early)
    # The epoch is a pure function of (seed, epoch): a second loader draws the same blocks.
    again = [row for batch in dm.train_dataloader() for row in batch["input_ids"]]
    assert all(torch.equal(a, b) for a, b in zip(blocks, again, strict=True))


def test_mixture_probe_keeps_domains_and_is_held_out(mixture_module):
    dm = mixture_module
    assert Counter(dm.probe_domains) == {"ava": 10, "fig": 6, "kon": 4}
    assert [domain_of(t) for t in dm.probe_texts] == dm.probe_domains
    for split in ("train", "val"):
        data = getattr(dm, f"_{split}").blocks
        stream = {d: "" for d in ALPHABETS}  # each domain's packed stream decoded back to text
        for row, d in zip(data, dm.block_domains[split].tolist(), strict=True):
            stream[dm.domains[d]] += dm.tokenizer.decode(row)
        for text, d in zip(dm.probe_texts, dm.probe_domains, strict=True):
            ids = [w for w in text.split() if len(w) == 7][1:-1]  # the unique ids of this probe text (whole ones)
            assert ids and not any(i in stream[d] for i in ids), (split, d)


def test_mixture_from_the_command_line(tmp_path):
    from trajlab.train.fit import lightning_cli

    paths = alphabet_corpora(tmp_path)
    cli = lightning_cli(["--config", DEBUG, "--run_dir", str(tmp_path / "run"), "--data.corpus",
                         f"{{{paths['ava']}: 3, {paths['kon']}: 1}}"], run=False)
    assert cli.datamodule.weights == {str(paths["ava"]): 0.75, str(paths["kon"]): 0.25}
    assert cli.datamodule.domains == ["ava", "kon"]
    with pytest.raises(ValueError, match="weights >= 0"):
        lightning_cli(["--config", DEBUG, "--data.corpus", "{bible: -1}"], run=False)
