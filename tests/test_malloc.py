"""esper_lab.malloc: the glibc thresholds are applied at run time, and can be left alone on request."""

from __future__ import annotations

import platform

import pytest

from esper_lab import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_malloc_applies_the_thresholds_once_per_process():
    assert malloc.tune_malloc() == "tuned" == malloc.malloc_setting()
    assert str(malloc.MMAP_THRESHOLD) in malloc.GLIBC_TUNABLES_LINE and "trim_threshold=4294967296" in malloc.GLIBC_TUNABLES_LINE


def test_default_on_request_reports_what_the_environment_set(monkeypatch):
    monkeypatch.setenv(malloc.ENV_VAR, "default")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setitem(malloc._state, "setting", None)
    assert malloc._apply() == "default"
    monkeypatch.setenv("GLIBC_TUNABLES", malloc.GLIBC_TUNABLES_LINE)
    assert malloc._apply() == "tuned"
