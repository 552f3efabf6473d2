"""A FIFO of the newest rows seen, shared by the models that train on recent data (EX2's replay,
VIME's transition pool, the AE hash's recent observations).

A buffer's state_dict() does not copy its rows: it holds a `RingRows` handle on them. Pickling
the state (torch.save) writes the rows; runner.run_dir.save_checkpoint instead appends only the
rows added since its previous checkpoint to side files beside last.pt (a 1M-row replay is not
rewritten at every checkpoint)."""
from __future__ import annotations

import uuid

import numpy as np

from algos.common.checks import require

# History of a buffer's rows: ((stream id, first row), ...), one entry per stretch of rows that one
# buffer object added (a new one after every load or copy). Row k (0-based count of every row
# added) belongs to the last entry whose first row is <= k. Two histories that name the same stream
# for row k hold the same row k: this is how save_checkpoint knows which rows in its side files it
# may keep, without comparing them.
History = tuple


def _new_stream() -> str:
    return uuid.uuid4().hex[:16]


def history_upto(history: History, n: int) -> History:
    """The entries of `history` that cover rows [0, n)."""
    return tuple((s, int(start)) for s, start in history if start < n)


def rows_in_common(a: History, a_rows: int, b: History, b_rows: int) -> int:
    """How many leading rows two row streams certainly share: the first `a_rows` rows described
    by history `a` and the first `b_rows` described by `b` agree on rows [0, result)."""
    limit = min(a_rows, b_rows)
    a, b = history_upto(a, limit), history_upto(b, limit)
    for entry_a, entry_b in zip(a, b):
        if entry_a != entry_b:  # the entries before agree, up to where either history moves on
            return min(entry_a[1], entry_b[1])
    if len(a) == len(b):
        return limit
    longer = a if len(a) > len(b) else b
    return longer[min(len(a), len(b))][1]


class RingRows:
    """The rows a RingBuffer stores, as its state_dict() holds them, in one of two forms.

    - live (`RingRows(buffer)`): a handle on the buffer's own array, no copy. It describes the
      buffer as it was when it was taken; once rows are added or loaded, using it raises.
    - stored (`RingRows.stored(...)`): it holds its rows itself. Pickling a live handle writes
      this form, so a torch.save / torch.load round trip of a state dict gives back one.

    Either way: `added` rows were ever added, the newest `size` = min(added, capacity) are held,
    row k in slot k % capacity; `slots()` is that [size, *row_shape] array."""

    def __init__(self, buffer: "RingBuffer"):
        self._buffer = buffer
        self._slots = None
        self.added = int(buffer.added)
        self.capacity = len(buffer.data)
        self.row_shape = tuple(buffer.data.shape[1:])
        self.dtype = buffer.data.dtype
        self.history = history_upto(buffer._history, self.added)
        self._buffer_history = buffer._history

    @classmethod
    def stored(cls, slots: np.ndarray, added: int, capacity: int, history: History) -> "RingRows":
        added, capacity = int(added), int(capacity)
        if len(slots) != min(added, capacity) or capacity <= 0:
            raise ValueError(f"RingRows: {len(slots)} rows stored for {added} added into capacity {capacity}")
        rows = cls.__new__(cls)
        rows._buffer, rows._slots, rows._buffer_history = None, slots, None
        rows.added, rows.capacity = added, capacity
        rows.row_shape, rows.dtype = tuple(slots.shape[1:]), slots.dtype
        rows.history = tuple((str(s), int(start)) for s, start in history)
        return rows

    @property
    def live(self) -> bool:
        return self._buffer is not None

    @property
    def size(self) -> int:
        return min(self.added, self.capacity)

    @property
    def top(self) -> int:
        return self.added % self.capacity

    def slots(self) -> np.ndarray:
        """The stored rows in slot order, [size, *row_shape] (a view of a live buffer's array)."""
        if self._buffer is None:
            return self._slots
        buffer = self._buffer
        if buffer.added != self.added or buffer._history is not self._buffer_history:
            raise RuntimeError("a RingBuffer changed after its state_dict() was taken: save or copy the "
                               "state before adding rows to the buffer")
        return buffer.data[:self.size]

    def pieces(self, start: int, stop: int):
        """(k, rows) pairs covering rows [start, stop) in order, k being the first row's number,
        each `rows` a contiguous part of slots() (no copy)."""
        if not self.added - self.size <= start <= stop <= self.added:
            raise ValueError(f"rows [{start}, {stop}) are not all held (rows [{self.added - self.size}, "
                             f"{self.added}) are)")
        slots = self.slots()
        k = start
        while k < stop:
            slot = k % self.capacity
            n = min(stop - k, self.capacity - slot)
            yield k, slots[slot:slot + n]
            k += n

    def ordered(self) -> np.ndarray:
        """A copy of the held rows, oldest first."""
        if self.size == 0:
            return self.slots()[:0].copy()
        return np.concatenate([rows for _, rows in self.pieces(self.added - self.size, self.added)])

    def __reduce__(self):
        return _stored_rows, (np.ascontiguousarray(self.slots()), self.added, self.capacity, self.history)

    def __repr__(self) -> str:
        form = "live" if self.live else "stored"
        return (f"RingRows({form}, added={self.added}, capacity={self.capacity}, "
                f"row_shape={self.row_shape}, dtype={self.dtype})")


def _stored_rows(slots, added, capacity, history) -> RingRows:
    return RingRows.stored(slots, added, capacity, history)


class RingBuffer:
    """The newest `capacity` rows of everything added, in one preallocated array.

    `added` counts every row ever added (EX2 compares it with its min_replay_size); `size` is how
    many are stored; rows [0, size) of `data` are valid; row k of all rows added (0-based) is in
    row k % capacity (`top` = added % capacity is the row the next add writes first)."""

    def __init__(self, capacity: int, shape: tuple, dtype=np.float32):
        self.data = np.zeros((int(capacity), *shape), dtype)
        self.top, self.added = 0, 0  # top: the row the next add writes first
        self._history: History = ((_new_stream(), 0),)

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

    def _fork(self) -> None:
        """From here on this buffer's rows are its own: a new stream in its history."""
        self._history = history_upto(self._history, self.added) + ((_new_stream(), self.added),)

    def __setstate__(self, state: dict) -> None:
        # A copy (copy.deepcopy, pickle) goes on with rows of its own.
        self.__dict__.update(state)
        self._fork()

    def state_dict(self) -> dict:
        """{"rows": a RingRows handle on the rows (no copy: save it before adding more), "top",
        "added"}."""
        return {"rows": RingRows(self), "top": self.top, "added": self.added}

    def load_state_dict(self, state: dict) -> None:
        rows = state.get("rows") if isinstance(state, dict) else None
        require(isinstance(rows, RingRows), "exploration (checkpoint)",
                "the replay buffer was saved in an older format (before RingRows); start the run over "
                "(resume=false)")
        require(rows.row_shape == self.data.shape[1:] and rows.size <= len(self.data),
                "exploration (checkpoint)", f"a buffer of shape {(rows.size, *rows.row_shape)} does not fit "
                f"{self.data.shape} (its size or the observation/action size changed)")
        require(int(state["added"]) == rows.added, "exploration (checkpoint)",
                f"the buffer's rows say {rows.added} added, its state {state['added']}")
        n = rows.size
        if rows.capacity == len(self.data):
            self.data[:n] = rows.slots()
            self.data[n:] = 0
            self.top = int(state["top"])
        else:  # another capacity: the same rows, each in its slot for this capacity
            self.data[:] = 0
            self.data[(rows.added - n + np.arange(n)) % len(self.data)] = rows.ordered()
            self.top = rows.added % len(self.data)
        self.added = rows.added
        self._history = rows.history
        self._fork()
