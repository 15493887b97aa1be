"""The instruction tokenizer: load it (files beside the weights first, then the Hugging Face cache, then
the Hub), build a small one offline, tokenize instructions, and refuse one that does not fit a checkpoint.

X-VLA uses BART's tokenizer; instructions are padded to ``tokenizer_max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def load_tokenizer(name_or_path: str | Path, local_dir: str | Path | None = None):
    """Load the BART tokenizer from ``local_dir`` (files beside the weights) or ``name_or_path``.

    Raises an OSError that says how to provide the tokenizer offline when neither is available.
    """
    from transformers import AutoTokenizer

    candidates = []
    for folder in (local_dir, name_or_path):
        if folder is not None and _has_tokenizer_files(Path(folder)):
            candidates.append((_tokenizer_from_files, str(folder), {}))
    candidates.append(
        (AutoTokenizer.from_pretrained, str(name_or_path), {"local_files_only": True})
    )  # HF cache
    if not Path(name_or_path).exists() and _hub_resolvable():
        candidates.append((AutoTokenizer.from_pretrained, str(name_or_path), {}))
    errors = []
    for load, candidate, kwargs in candidates:
        try:
            return load(candidate, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported below with the fix
            errors.append(
                f"{candidate}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
    raise OSError(
        f"could not load the tokenizer '{name_or_path}' ({'; '.join(errors)}). The Hugging Face Hub may be "
        "unreachable. Provide it offline: put tokenizer files (tokenizer.json or vocab.json + merges.txt) in the "
        "checkpoint folder, or set tokenizer_name to a local folder, or pass tokenizer=... to XVLAPolicy, or "
        "pre-tokenize the instruction as 'observation.language.tokens'."
    )


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int = 300):
    """A small byte-level BPE tokenizer with BART's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3), trained
    here on ``texts``: for tests and CPU demos, which train their text embedding from scratch (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(list(texts) * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _tokenizer_from_files(folder: str):
    """Tokenizer files in a checkpoint folder, read without its config.json: an official checkpoint's
    config says ``model_type: xvla``, which makes AutoTokenizer warn and ask about remote code."""
    from transformers import BartTokenizerFast, PreTrainedTokenizerFast

    if (Path(folder) / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return BartTokenizerFast.from_pretrained(folder)


def _hub_resolvable() -> bool:
    """Whether the Hub's host name resolves: saves a minute of download retries when offline."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists()


def tokenize(tokenizer, texts: Sequence[str] | str, max_length: int) -> torch.Tensor:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("'task' must be a string or a list of strings (one instruction per sample)")
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return encoded["input_ids"].long()


def check_tokenizer_fits(tokenizer: Any, vocab_size: int, name: Any = "") -> None:
    """Refuse a tokenizer whose ids would index past the checkpoint's text embedding."""
    size = len(tokenizer)
    if size > vocab_size:
        raise ValueError(
            f"the tokenizer '{name or getattr(tokenizer, 'name_or_path', '')}' has {size} tokens but this checkpoint's "
            f"text embedding has {vocab_size}: it is not the tokenizer the model was trained with. Put the "
            "checkpoint's own tokenizer files beside its weights, or point tokenizer_name (--tokenizer) at them."
        )
