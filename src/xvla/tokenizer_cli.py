"""``xvla tokenizer``: put a tokenizer where X-VLA finds it without the Hugging Face Hub.

    xvla tokenizer CHECKPOINT --source=/path/to/bart-large       # copy one beside the weights
    xvla tokenizer outputs/tok --train-on=data/my_robot           # build one from a dataset's instructions
    xvla train --tokenizer=outputs/tok ...                         # and train from scratch with it

A checkpoint reads the tokenizer files beside its weights first (``xvla.tokenizer.load_tokenizer``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .flags import add_dataclass_flags, dataclass_from_args, documented

# A built tokenizer's vocabulary when OUTPUT is no checkpoint (then the text embedding is trained with it).
DEFAULT_VOCAB = 1024


@dataclass
class TokenizerConfig:
    output: str = field(
        metadata={
            "help": "where the tokenizer files go: a checkpoint folder (beside its weights, "
            "where it is read first) or a folder to pass to --tokenizer"
        }
    )
    source: str | None = documented(
        None,
        "copy this tokenizer: a folder with tokenizer files, a checkpoint folder, "
        "or a Hub id already in the local cache (e.g. facebook/bart-large)",
    )
    train_on: str | None = documented(
        None,
        "build a byte-level BPE tokenizer from these instructions instead: a "
        "LeRobot dataset folder (its tasks) or a text file, one per line",
    )
    vocab_size: int | None = documented(
        None,
        "most tokens of a built tokenizer (default: a checkpoint's text "
        f"embedding size, else {DEFAULT_VOCAB})",
    )
    overwrite: bool = documented(False, "replace tokenizer files OUTPUT already holds")


def instructions(path: str | Path) -> list[str]:
    """The texts to build a tokenizer from: a dataset's tasks, or the lines of a text file."""
    path = Path(path)
    if path.is_dir():
        from .data import LeRobotDatasetMeta

        texts = list(LeRobotDatasetMeta(path).tasks)
    elif path.is_file():
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        raise FileNotFoundError(
            f"--train_on={path} does not exist: give a LeRobot dataset folder or a text file"
        )
    if not texts:
        raise ValueError(f"--train_on={path} holds no instructions to build a tokenizer from")
    return texts


def _checkpoint_vocab(output: Path) -> int | None:
    """The text embedding size when OUTPUT is a checkpoint folder (its tokenizer must fit it)."""
    if not (output / "config.json").is_file():
        return None
    from . import checkpoints as ckpt

    config, _ = ckpt.config_from_json(ckpt.read_config_json(output), output)
    return int(config.florence_config["text_config"].get("vocab_size", 51289))


def make_tokenizer(cfg: TokenizerConfig, vocab: int | None) -> Any:
    from .tokenizer import load_tokenizer, train_bpe_tokenizer

    if (cfg.source is None) == (cfg.train_on is None):
        raise ValueError(
            "give one of --source (copy a tokenizer) or --train_on (build one from instructions)"
        )
    if cfg.source is not None:
        return load_tokenizer(cfg.source)
    return train_bpe_tokenizer(
        instructions(cfg.train_on), vocab_size=cfg.vocab_size or vocab or DEFAULT_VOCAB
    )


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from .checkpoints import TOKENIZER_FILES
    from .tokenizer import check_tokenizer_fits, load_tokenizer

    cfg = dataclass_from_args(TokenizerConfig, args)
    output = Path(cfg.output)
    present = sorted(p.name for p in output.iterdir() if p.name in TOKENIZER_FILES) if output.is_dir() else []
    if present and not cfg.overwrite:
        raise FileExistsError(
            f"{output} already holds tokenizer files {present}: pass --overwrite to replace them"
        )
    vocab = _checkpoint_vocab(output)
    tokenizer = make_tokenizer(cfg, vocab)
    if vocab is not None:
        check_tokenizer_fits(tokenizer, vocab, cfg.source or cfg.train_on)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(output))
    loaded = load_tokenizer(output)  # read back the way a checkpoint or --tokenizer reads it
    print(
        json.dumps(
            {
                "output": str(output),
                "tokens": len(loaded),
                "checkpoint": vocab is not None,
                "files": sorted(p.name for p in output.iterdir() if p.name in TOKENIZER_FILES),
            },
            indent=2,
        )
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "tokenizer", help="copy or build a local tokenizer (offline: no Hugging Face Hub needed)"
    )
    add_dataclass_flags(p, TokenizerConfig, positional=("output",))
    p.set_defaults(func=cmd_tokenizer)
