"""Fine-tuning the sentence encoder on the training dialogues before graph training.

The paper's best text-only result uses a fine-tuned RoBERTa (68.45 vs 68.05 frozen). Here
the configured sentence-transformers model reads each utterance with its preceding turns
(:func:`joyful.data.context_text.contextual_texts`) and learns to predict its emotion
through a linear head; the head is then dropped and the tuned encoder produces the text
features Joyful trains on, and later those of new dialogues.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from joyful.data.context_text import contextual_texts
from joyful.data.labels import LabelSet
from joyful.data.schema import DialogueSet
from joyful.data.text_encoder import TextEncoder


def finetune_text_encoder(
    train: DialogueSet,
    label_set: LabelSet,
    encoder: TextEncoder,
    target: Path,
    *,
    context: int,
    epochs: int,
    lr: float,
    batch_size: int,
    max_tokens: int,
    seed: int,
    progress: bool = True,
) -> Path:
    """Tune ``encoder``'s model on the labelled utterances of ``train`` and save it to ``target``.

    The directory is written under a temporary name and renamed when complete, so a
    crash never leaves a half-saved encoder that a later run would trust.
    """
    texts, labels = [], []
    index = {name: i for i, name in enumerate(label_set.labels)}
    for d in train:
        for text, label in zip(contextual_texts(d, context), d.labels or [None] * len(d), strict=True):
            if label is not None:
                texts.append(text)
                labels.append(index[label])
    model = encoder.model()
    model.max_seq_length = max_tokens
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(encoder.dim, len(label_set.labels))
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=lr)
    y = torch.tensor(labels)
    model.train()
    steps = epochs * -(-len(texts) // batch_size)
    with tqdm(total=steps, desc="fine-tuning text encoder", unit="batch", disable=not progress) as bar:
        for _ in range(epochs):
            for idx in torch.randperm(len(texts), generator=generator).split(batch_size):
                features = model.tokenize([texts[i] for i in idx])
                embedding = model(features)["sentence_embedding"]
                loss = F.cross_entropy(head(embedding), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save(str(staging))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
