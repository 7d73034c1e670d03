"""The allocator switch: on where glibc is the C library, off where the user chose an allocator setting."""

import os
import platform

import pytest

from bench.allocator import keep_freed_memory

switch = keep_freed_memory.__wrapped__  # the uncached function: each call decides again


def test_a_malloc_setting_or_a_preloaded_allocator_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert switch() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    assert switch() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_is_switched(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MALLOC_") or name == "LD_PRELOAD":
            monkeypatch.delenv(name)
    assert switch() is True
