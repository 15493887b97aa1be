"""Loading, building and using the instruction tokenizer."""

import pytest

from xvla.tokenizer import load_tokenizer, tokenize


def test_tokenize(tokenizer):
    ids = tokenize(tokenizer, ["pick up the cup", "open the drawer"], max_length=12)
    assert ids.shape == (2, 12) and ids[0, 0] == 0
    assert (ids == tokenizer.pad_token_id).any()


def test_tokenizer_offline_error_says_how_to_fix(tmp_path):
    with pytest.raises(OSError, match="tokenizer files"):
        load_tokenizer("facebook/bart-large-not-here", local_dir=tmp_path)


def test_tokenizer_from_local_dir(tokenizer_dir):
    tok = load_tokenizer("facebook/bart-large", local_dir=tokenizer_dir)
    assert tok.pad_token_id == 1


def test_tokenizer_files_beside_an_official_checkpoint_load_without_its_config(tmp_path, tokenizer, recwarn):
    """An official config.json says model_type 'xvla': AutoTokenizer would warn and ask about remote code."""
    import json
    import logging

    tokenizer.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xvla", "architectures": ["XVLA"]}))
    logs = []
    handler = logging.Handler()
    handler.emit = logs.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        loaded = load_tokenizer("facebook/bart-large", local_dir=tmp_path)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert loaded("pick up the red block")["input_ids"] == tokenizer("pick up the red block")["input_ids"]
    assert not [r for r in logs if "xvla" in r.getMessage()]
