"""A FIFO of the newest rows seen, shared by the models that train on recent data (EX2's replay,
VIME's transition pool, the AE hash's recent observations)."""
from __future__ import annotations

import numpy as np

from algos.common.checks import require


class RingBuffer:
    """The newest `capacity` rows of everything added, in one preallocated array.

    `added` counts every row ever added (EX2 compares it with its min_replay_size); `size` is how
    many are stored; rows [0, size) of `data` are valid, in no particular order."""

    def __init__(self, capacity: int, shape: tuple, dtype=np.float32):
        self.data = np.zeros((int(capacity), *shape), dtype)
        self.top, self.added = 0, 0  # top: the row the next add writes first

    @property
    def size(self) -> int:
        return min(self.added, len(self.data))

    def add(self, rows: np.ndarray) -> None:
        rows = rows[-len(self.data):]  # a batch larger than the buffer keeps its newest rows
        idx = (self.top + np.arange(len(rows))) % len(self.data)
        self.data[idx] = rows
        self.top = int((self.top + len(rows)) % len(self.data))
        self.added += len(rows)

    def sample(self, rng: np.random.Generator, n) -> np.ndarray:
        return self.data[rng.integers(0, self.size, n)]

    def state_dict(self) -> dict:
        return {"data": self.data[:self.size].copy(), "top": self.top, "added": self.added}

    def load_state_dict(self, state: dict) -> None:
        require(state["data"].shape[1:] == self.data.shape[1:] and len(state["data"]) <= len(self.data),
                "exploration (checkpoint)", f"a buffer of shape {state['data'].shape} does not fit "
                f"{self.data.shape} (its size or the observation/action size changed)")
        self.data[:] = 0
        self.data[:len(state["data"])] = state["data"]
        self.top, self.added = int(state["top"]), int(state["added"])
