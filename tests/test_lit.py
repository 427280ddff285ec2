"""Lightning training: debug fit, fine-tune from it, exact resume, and each bad input."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from trajlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def fit(run_dir, *extra):
    return main(["fit", "--config", DEBUG, "--run_dir", str(run_dir), *extra])


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

    from trajlab import corpus

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
    with pytest.raises((SystemExit, ValueError), match="unknown model preset|huge"):
        fit(tmp_path, "--model.preset", "huge")


def test_unknown_config_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fit(tmp_path, "--model.no_such_key", "1")
    assert e.value.code != 0
    assert "no_such_key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, field, message",
    [("", "text", "empty|no text"), ('{"body": "some words here"}\n', "text", "text")],
)
def test_bad_corpus(tmp_path, content, field, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        fit(tmp_path / "run", "--data.corpus", str(path), "--data.text_field", field)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        fit(tmp_path / "run", "--data.corpus", str(tmp_path / "nope.txt"))


def test_finetune_source_with_smaller_vocab(tmp_path, debug_run):
    from transformers import AutoTokenizer

    from trajlab.models import build_model

    src = tmp_path / "small"
    build_model("nano", vocab_size=100, context_length=64).save_pretrained(src)
    AutoTokenizer.from_pretrained(debug_run / "hf").save_pretrained(src)  # 512 ids > 100 rows
    with pytest.raises(ValueError, match="100 embedding rows.*512"):
        fit(tmp_path / "run", "--model.init_from", str(src))


def test_non_finite_loss_names_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step \d+"):
        fit(tmp_path / "run", "--model.lr", "1e12", "--trainer.gradient_clip_val", "null")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="not writable"):
        fit(blocker / "run")
