"""Shared fixtures. Everything runs offline (HF_HUB_OFFLINE=1) on the CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SORA_NB_TRAIN_BUDGET", "tiny")  # notebook 07 trains for seconds under test

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gen():
    """The embedded default generator (loaded once)."""
    import sora_nb

    return sora_nb.load("shapes")


@pytest.fixture(scope="session")
def video(gen):
    """One default clip, generated once for read-only tests."""
    return gen.generate("a red circle moving right", seed=0, steps=4)
