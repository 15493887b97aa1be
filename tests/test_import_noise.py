"""Importing xvla hides two harmless third-party import warnings (xvla.utils.quiet_import_noise), and only those."""

import logging
import subprocess
import sys

import pytest
import torch

import xvla  # noqa: F401  (installs the filters)

TORCHAO_CUDA_ONLY = "Failed to load /x/site-packages/torchao/_C_mxfp8.so: Could not load this library"
PYTREE_ENUM = (
    "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an opaque "
    "value type. Calling register_constant() on Enum subclasses is deprecated"
)


def _passes(logger_name: str, message: str) -> bool:
    logger = logging.getLogger(logger_name)
    record = logger.makeRecord(logger_name, logging.WARNING, __file__, 1, message, (), None)
    return logger.filter(record)


def test_only_the_deprecated_enum_registration_is_dropped_from_pytree():
    assert not _passes("torch.utils._pytree", PYTREE_ENUM)
    assert _passes("torch.utils._pytree", "some other pytree warning")


@pytest.mark.skipif(torch.version.cuda is not None, reason="on a CUDA build of torch the message is kept")
def test_only_torchaos_cuda_extension_failures_are_dropped_on_a_cpu_build():
    assert not _passes("torchao", TORCHAO_CUDA_ONLY)
    assert _passes("torchao", "Failed to load /x/site-packages/other/lib.so")
    assert _passes("torchao", "some other torchao warning")


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


def test_importing_the_model_code_prints_neither_message():
    pytest.importorskip("torchao")
    plain = _stderr("import transformers.modeling_utils")
    if "Failed to load" not in plain and "Enum subclass" not in plain:
        pytest.skip("this torchao / torch pair prints neither message")
    ours = _stderr("import xvla.model.vlm")
    assert "Failed to load" not in ours and "Enum subclass" not in ours
