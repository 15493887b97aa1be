"""xvla.utils.keep_freed_memory: the `xvla` command sets glibc's malloc to keep freed blocks (opt-out by env);
a policy built by a library user leaves the host process's allocator alone."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

HEAP_PROBE = """
import ctypes, sys
import torch
from xvla import XVLAPolicy
from xvla.config import XVLAConfig, tiny_florence_config
from xvla.utils import keep_freed_memory

if sys.argv[1] == "call":
    assert keep_freed_memory()
elif sys.argv[1] == "policy":
    XVLAPolicy(XVLAConfig(hidden_size=32, depth=1, num_heads=4, florence_config=tiny_florence_config(width=24)))
elif sys.argv[1] == "cli":
    from xvla.cli import main
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
x = torch.ones(4 << 20)  # 16 MB
in_heap = x.data_ptr() < libc.sbrk(0)
top = libc.sbrk(0)
del x
print(in_heap, libc.sbrk(0) == top)
"""


def probe(mode: str, **env: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.split("\n")[-2]


def test_by_default_a_large_block_is_a_fresh_mmap_given_back_when_freed():
    assert probe("none").startswith("False")  # its pages fault again at the next allocation


def test_keep_freed_memory_serves_large_blocks_from_a_heap_that_keeps_them():
    assert probe("call") == "True True"


def test_building_a_policy_leaves_the_host_allocator_alone():
    assert probe("policy").startswith("False")


def test_the_xvla_command_applies_it_unless_the_environment_opts_out():
    assert probe("cli") == "True True"
    assert probe("cli", XVLA_KEEP_FREED_MEMORY="0").startswith("False")
