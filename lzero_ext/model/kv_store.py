"""Preallocated KV storage for batched inference: one tensor pair for many cache entries.

lightzero's UniZero keeps one ``KeysValues`` object per environment and per search node, looks them
up by hashing latent states, and trims, pads and copies them one environment at a time in Python.
Here every entry of one kind lives in one preallocated pair of tensors::

    kv: (2, L, N, H, C, d)    keys and values; L layers, N entries, H heads, C = context_length tokens, d head width
    size: (N,) numpy ints     valid tokens of each entry, left-aligned in [0, size); the columns after are
                              never read (``gather_right_aligned`` masks them)

Sizes live on the host: they follow from the search tree's structure (a child holds its parent's
tokens plus two), so no device value is ever read back to decide a shape.

``gather_right_aligned`` builds a batch's working context from entries (valid tokens ending at a fixed
column, zeros before them), and ``store`` writes a window of a working buffer back as entries, both
as a few tensor ops for the whole batch.

Example:
    >>> store = KVStore(num_layers=2, num_entries=4, num_heads=2, context_length=8, head_dim=4)
    >>> kv = torch.randn(2, 2, 3, 2, 8, 4)                 # a working buffer of 3 rows
    >>> store.store([0, 2, 3], kv, offsets=np.array([5, 6, 6]), sizes=np.array([3, 2, 2]))
    >>> buffer, valid = store.gather_right_aligned([2, 0], width=6, free_columns=2)
    >>> buffer.shape, valid.tolist()
    (torch.Size([2, 2, 2, 2, 8, 4]), [[False, False, False, False, True, True], [False, False, False, True, True, True]])
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

Index = Union[Sequence[int], np.ndarray]


class KVStore:
    """``N`` KV-cache entries of up to ``context_length`` tokens each, for every layer (see the module docstring)."""

    def __init__(self, *, num_layers: int, num_entries: int, num_heads: int, context_length: int, head_dim: int,
                 device: Union[str, torch.device] = 'cpu', dtype: torch.dtype = torch.float32) -> None:
        self.kv = torch.zeros((2, num_layers, num_entries, num_heads, context_length, head_dim), device=device,
                              dtype=dtype)  # keys [0] and values [1]: one gather and one copy move both
        self.size = np.zeros(num_entries, dtype=np.int64)
        self.context_length = context_length

    @property
    def num_entries(self) -> int:
        return self.kv.shape[2]

    @property
    def device(self) -> torch.device:
        return self.kv.device

    def gather_right_aligned(self, entries: Index, width: int, *, sizes: Optional[np.ndarray] = None,
                             free_columns: int = 0) -> Tuple[Tensor, np.ndarray]:
        """Entries ``entries`` as a ``(2, L, B, H, width + free_columns, d)`` working buffer whose valid tokens end
        at column ``width`` (zeros before them, as lightzero's ``trim_and_pad_kv_cache`` left-pads; zeros in the
        ``free_columns`` after), and the ``(B, width)`` host mask of valid columns. ``sizes`` overrides the
        entries' sizes (0: an empty context)."""
        entries = np.asarray(entries, dtype=np.int64)
        sizes = self.size[entries] if sizes is None else np.asarray(sizes, dtype=np.int64)  # (B,)
        if width < int(sizes.max(initial=0)):
            raise ValueError(f"width {width} is smaller than the longest entry ({int(sizes.max())} tokens)")
        column = np.arange(width + free_columns)[None, :] - (width - sizes[:, None])  # (B, W') source column
        valid = (column >= 0) & (column < sizes[:, None])
        index = torch.from_numpy(np.where(valid, column, 0)).to(self.device)
        mask = torch.from_numpy(valid).to(self.device, self.kv.dtype)[None, None, :, None, :, None]
        _, L, _, H, _, d = self.kv.shape
        gather_index = index[None, None, :, None, :, None].expand(2, L, -1, H, -1, d)  # (2, L, B, H, W', d)
        rows = torch.from_numpy(entries).to(self.device)
        buffer = self.kv.index_select(2, rows).gather(4, gather_index) * mask
        return buffer, valid[:, :width]

    def store(self, entries: Index, kv: Tensor, *, offsets: np.ndarray, sizes: np.ndarray,
              correction: Optional[Tensor] = None, corrected: Optional[np.ndarray] = None) -> None:
        """Writes ``kv[:, :, i, :, offsets[i]:offsets[i] + sizes[i]]`` of a ``(2, L, B, H, W, d)`` working buffer to
        entry ``entries[i]``, left-aligned. Rows with ``corrected[i]`` get ``correction`` ``(2, L, H, n, d)`` added
        to their first ``n`` tokens (lightzero's positional-encoding shift of a trimmed context)."""
        entries = np.asarray(entries, dtype=np.int64)
        offsets, sizes = np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
        C = self.context_length
        if int(sizes.max(initial=0)) > C:
            raise ValueError(f"an entry of {int(sizes.max())} tokens does not fit a context of {C}")
        # source column of each stored column; those past an entry's size hold whatever lies there (any column of
        # the buffer): they are never read, gather_right_aligned masks them out
        index = torch.from_numpy(np.minimum(offsets[:, None] + np.arange(C)[None, :], kv.shape[4] - 1)).to(self.device)
        _, L, B, H, _, d = kv.shape
        gather_index = index[None, None, :, None, :, None].expand(2, L, -1, H, -1, d)  # (2, L, B, H, C, d)
        new = kv.gather(4, gather_index)                                              # (2, L, B, H, C, d)
        if correction is not None and corrected is not None and corrected.any():
            n = correction.shape[3]
            rows = torch.from_numpy(np.flatnonzero(corrected)).to(self.device)
            new[:, :, rows, :, :n] += correction[:, :, None]
        self.kv.index_copy_(2, torch.from_numpy(entries).to(self.device), new.to(self.kv.dtype))
        self.size[entries] = sizes

    def copy_entries(self, source: 'KVStore', source_entries: Index, entries: Index) -> None:
        """Entries ``entries`` become copies of ``source``'s ``source_entries``."""
        src = torch.from_numpy(np.asarray(source_entries, dtype=np.int64)).to(self.device)
        dst = torch.from_numpy(np.asarray(entries, dtype=np.int64)).to(self.device)
        self.kv.index_copy_(2, dst, source.kv.index_select(2, src))
        self.size[np.asarray(entries)] = source.size[np.asarray(source_entries)]
