"""Test doubles shared by the server tests."""

import time


class SlowModel:
    """The model with a pause per step, so that a generation lasts long enough to interrupt."""

    def __init__(self, model, delay: float):
        self.model, self.delay = model, delay

    def __getattr__(self, name):  # config, new_cache, ...
        return getattr(self.model, name)

    def forward(self, *a, **k):
        time.sleep(self.delay)
        return self.model.forward(*a, **k)

    def decode_batch(self, *a, **k):
        time.sleep(self.delay)
        return self.model.decode_batch(*a, **k)
