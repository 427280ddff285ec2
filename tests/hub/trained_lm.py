"""A small GPT-NeoX trained for a few seconds on the bundled Shakespeare corpus, shared by the quantization tests.

Not random weights: quantization error on a trained model is what llama.cpp users meet (a random model's
logits are nearly flat, so any KL between its copies is tiny and uninformative).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from pathlib import Path

STEPS, BATCH, SEQ = 100, 8, 128  # ~3 s on an idle core; loss 6.2 -> ~3.9 nats/token (vocab 512)


@functools.cache
def trained_folder() -> Path:
    """A save_pretrained folder (model + tokenizer) of preset "nano" (2 layers, d 64, vocab 512, context 1024),
    trained once per test session with AdamW, seeded."""
    with one_thread():
        return _train()


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside: for models this small, several times faster than two threads on a machine
    shared with other jobs (threads that wait for a descheduled sibling), and no slower on an idle one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train() -> Path:
    import torch

    from trajlab.data import corpus
    from trajlab.data.tokenizer import train_tokenizer
    from trajlab.train.models import build_model

    torch.manual_seed(0)
    texts = corpus.load_splits("shakespeare").train[:400]
    tok = train_tokenizer(texts, vocab_size=512, cache=False)
    ids = torch.tensor([i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [0]])
    blocks = ids[: len(ids) // SEQ * SEQ].view(-1, SEQ)  # (n_blocks, SEQ)
    model = build_model("nano", 512, 1024)  # context 1024: every probe text (<= 1024 bytes) fits whole
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        batch = blocks[torch.randint(len(blocks), (BATCH,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = Path(tempfile.mkdtemp(prefix="trajlab-trained-lm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def load():
    """(model in eval mode, tokenizer) from `trained_folder`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = trained_folder()
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
