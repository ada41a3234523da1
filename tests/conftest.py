"""Shared test helpers."""

import pytest

import train


@pytest.fixture(scope="session")
def die_after_first_checkpoint():
    """patch(monkeypatch) makes train.py's run die right after it writes epoch 0's last.pt (as a
    killed run would); returns the real save_checkpoint, to put back before resuming."""
    def patch(monkeypatch):
        real_save = train.save_checkpoint

        def save_then_die(path, *a, **kw):
            real_save(path, *a, **kw)
            if path.name == "last.pt":
                raise KeyboardInterrupt  # killed right after epoch 0's checkpoint

        monkeypatch.setattr(train, "save_checkpoint", save_then_die)
        return real_save
    return patch
