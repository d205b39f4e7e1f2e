"""Preallocated KV storage for batched inference: one tensor pair for many cache entries.

lightzero's UniZero keeps one ``KeysValues`` object per environment and per search node, looks them
up by hashing latent states, and trims, pads and copies them one environment at a time in Python.
Here every entry of one kind lives in one preallocated pair of tensors::

    k, v: (L, N, H, C, d)     L layers, N entries, H heads, C = context_length tokens, d head width
    size: (N,) numpy ints     valid tokens of each entry, left-aligned in [0, size)

Sizes live on the host: they follow from the search tree's structure (a child holds its parent's
tokens plus two), so no device value is ever read back to decide a shape.

``gather_right_aligned`` builds a batch's working context from entries (valid tokens ending at a fixed
column, zeros before them), and ``store`` writes a window of a working buffer back as entries, both
as a few tensor ops for the whole batch.

Example:
    >>> store = KVStore(num_layers=2, num_entries=4, num_heads=2, context_length=8, head_dim=4)
    >>> k = torch.randn(2, 3, 2, 8, 4); v = torch.randn(2, 3, 2, 8, 4)    # a working buffer of 3 rows
    >>> store.store([0, 2, 3], k, v, offsets=np.array([5, 6, 6]), sizes=np.array([3, 2, 2]))
    >>> ctx_k, ctx_v, valid = store.gather_right_aligned([2, 0], width=6)
    >>> ctx_k.shape, valid.tolist()
    (torch.Size([2, 2, 2, 6, 4]), [[False, False, False, False, True, True], [False, False, False, True, True, True]])
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
        shape = (num_layers, num_entries, num_heads, context_length, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.size = np.zeros(num_entries, dtype=np.int64)
        self.context_length = context_length

    @property
    def num_entries(self) -> int:
        return self.k.shape[1]

    @property
    def device(self) -> torch.device:
        return self.k.device

    def gather_right_aligned(self, entries: Index, width: int) -> Tuple[Tensor, Tensor, np.ndarray]:
        """Entries ``entries`` as a ``(L, B, H, width, d)`` context whose valid tokens end at column ``width``
        (zeros before them, as lightzero's ``trim_and_pad_kv_cache`` left-pads), and the ``(B, width)`` host mask
        of valid columns."""
        entries = np.asarray(entries, dtype=np.int64)
        sizes = self.size[entries]                                                    # (B,)
        if width < int(sizes.max(initial=0)):
            raise ValueError(f"width {width} is smaller than the longest entry ({int(sizes.max())} tokens)")
        column = np.arange(width)[None, :] - (width - sizes[:, None])                 # (B, width) source column
        valid = column >= 0
        index = torch.from_numpy(np.where(valid, column, 0)).to(self.device)          # (B, width)
        rows = torch.from_numpy(entries).to(self.device)
        mask = torch.from_numpy(valid).to(self.device, self.k.dtype)[None, :, None, :, None]  # (1, B, 1, width, 1)
        L, _, H, _, d = self.k.shape
        gather_index = index[None, :, None, :, None].expand(L, -1, H, -1, d)           # (L, B, H, width, d)
        k = self.k.index_select(1, rows).gather(3, gather_index) * mask               # (L, B, H, width, d)
        v = self.v.index_select(1, rows).gather(3, gather_index) * mask
        return k, v, valid

    def store(self, entries: Index, k: Tensor, v: Tensor, *, offsets: np.ndarray, sizes: np.ndarray,
              correction: Optional[Tuple[Tensor, Tensor]] = None, corrected: Optional[np.ndarray] = None) -> None:
        """Writes ``k[:, i, :, offsets[i]:offsets[i] + sizes[i]]`` (and ``v``) of a ``(L, B, H, W, d)`` working
        buffer to entry ``entries[i]``, left-aligned. Rows with ``corrected[i]`` get ``correction = (dk, dv)``,
        each ``(L, H, n, d)``, added to their first ``n`` tokens (lightzero's positional-encoding shift of a
        trimmed context)."""
        entries = np.asarray(entries, dtype=np.int64)
        offsets, sizes = np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
        C = self.context_length
        if int(sizes.max(initial=0)) > C:
            raise ValueError(f"an entry of {int(sizes.max())} tokens does not fit a context of {C}")
        column = offsets[:, None] + np.arange(C)[None, :]                              # (B, C) source column
        valid = np.arange(C)[None, :] < sizes[:, None]
        index = torch.from_numpy(np.where(valid, column, 0)).to(self.device)
        L, B, H, _, d = k.shape
        gather_index = index[None, :, None, :, None].expand(L, -1, H, -1, d)           # (L, B, H, C, d)
        mask = torch.from_numpy(valid).to(self.device, self.k.dtype)[None, :, None, :, None]
        new_k = k.gather(3, gather_index) * mask                                      # (L, B, H, C, d)
        new_v = v.gather(3, gather_index) * mask
        if correction is not None and corrected is not None and corrected.any():
            dk, dv = correction                                                       # (L, H, n, d)
            n = dk.shape[2]
            rows = torch.from_numpy(np.flatnonzero(corrected)).to(self.device)
            new_k[:, rows, :, :n] += dk[:, None]
            new_v[:, rows, :, :n] += dv[:, None]
        target = torch.from_numpy(entries).to(self.device)
        self.k.index_copy_(1, target, new_k.to(self.k.dtype))
        self.v.index_copy_(1, target, new_v.to(self.v.dtype))
        self.size[entries] = sizes

    def copy_entries(self, source: 'KVStore', source_entries: Index, entries: Index) -> None:
        """Entries ``entries`` become copies of ``source``'s ``source_entries``."""
        src = torch.from_numpy(np.asarray(source_entries, dtype=np.int64)).to(self.device)
        dst = torch.from_numpy(np.asarray(entries, dtype=np.int64)).to(self.device)
        self.k.index_copy_(1, dst, source.k.index_select(1, src))
        self.v.index_copy_(1, dst, source.v.index_select(1, src))
        self.size[np.asarray(entries)] = source.size[np.asarray(source_entries)]
