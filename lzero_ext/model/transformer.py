"""Transformer backbone of the ScaleZero world model: lightzero's UniZero transformer whose FFN
sublayer is, per config, lightzero's dense GELU MLP (the multi-task UniZero baseline) or a
``MoEFeedForward`` (the ScaleZero paper). Attention stays dense and unchanged.

MoE blocks keep the router logits of their last forward in ``block.router_logits``; the transformer
can record them per forward (``record_router_logits``) so the world model adds the auxiliary losses
of the training forward only, not of any later analysis forward.
"""
from contextlib import contextmanager
from typing import Iterator, List, Mapping, Optional

import torch  # noqa: F401  (used by the docstring examples)
from torch import Tensor, nn

from lzero.model.unizero_world_models.kv_caching import KeysValues
from lzero.model.unizero_world_models.transformer import Block, Transformer, TransformerConfig

from lzero_ext.model.moe import MoEFeedForward


class ScaleZeroBlock(Block):
    """lightzero ``Block`` whose ``mlp`` is a ``MoEFeedForward`` when ``moe['enabled']``.

    ``moe`` is the ``moe`` dict of the world-model config (keys and defaults documented in
    ``MultiTaskWorldModel.config``); None or ``enabled=False`` keeps lightzero's dense MLP.

    Example:
        >>> from easydict import EasyDict
        >>> cfg = EasyDict(embed_dim=32, num_heads=4, gru_gating=False, attn_pdrop=0., resid_pdrop=0.,
        ...                max_tokens=8, rotary_emb=False)
        >>> moe = dict(enabled=True, num_experts=4, top_k=1, num_shared_experts=1, expert_type='swiglu',
        ...            shared_expert_type='gelu', hidden_dim=None)
        >>> block = ScaleZeroBlock(cfg, moe=moe)
        >>> block(torch.randn(2, 3, 32)).shape, block.router_logits.shape
        (torch.Size([2, 3, 32]), torch.Size([6, 4]))
    """

    def __init__(self, config: TransformerConfig, moe: Optional[Mapping] = None) -> None:
        super().__init__(config)
        self.router_logits: Optional[Tensor] = None  # (N_tokens, E) of the last forward, MoE blocks only
        if moe is not None and moe['enabled']:
            self.mlp = MoEFeedForward(
                config.embed_dim, num_experts=moe['num_experts'], top_k=moe['top_k'],
                num_shared_experts=moe['num_shared_experts'], expert_type=moe['expert_type'],
                shared_expert_type=moe['shared_expert_type'],
                hidden_dim=moe['hidden_dim'], dropout=config.resid_pdrop,
            )

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, MoEFeedForward)

    def _feed_forward(self, x: Tensor) -> Tensor:
        if not self.is_moe:
            return self.mlp(x)
        out, self.router_logits = self.mlp(x)  # (B, T, D), (B*T, E)
        return out

    def forward(self, x: Tensor, past_keys_values: Optional[KeysValues] = None,
                valid_context_lengths: Optional[Tensor] = None, freqs_cis: Optional[Tensor] = None) -> Tensor:
        # Block.forward calls self.mlp(...) as a tensor; restated to unpack the MoE's (output, router_logits).
        x_attn = self.attn(self.ln1(x), past_keys_values, valid_context_lengths, freqs_cis)
        if self.gru_gating:
            x = self.gate1(x, x_attn)
            return self.gate2(x, self._feed_forward(self.ln2(x)))
        x = x + x_attn
        return x + self._feed_forward(self.ln2(x))


class ScaleZeroTransformer(Transformer):
    """lightzero ``Transformer`` built from ``ScaleZeroBlock`` s (dense or MoE FFN in every block).

    Example:
        >>> from easydict import EasyDict
        >>> cfg = EasyDict(embed_dim=32, num_heads=4, num_layers=2, gru_gating=False, embed_pdrop=0.,
        ...                attn_pdrop=0., resid_pdrop=0., max_tokens=8, rotary_emb=False)
        >>> moe = dict(enabled=True, num_experts=4, top_k=1, num_shared_experts=1, expert_type='swiglu',
        ...            shared_expert_type='gelu', hidden_dim=None)
        >>> net = ScaleZeroTransformer(cfg, moe=moe)
        >>> with net.record_router_logits() as record:
        ...     y = net(torch.randn(2, 3, 32))
        >>> y.shape, len(record), [z.shape for z in record[0]]
        (torch.Size([2, 3, 32]), 1, [torch.Size([6, 4]), torch.Size([6, 4])])
    """

    def __init__(self, config: TransformerConfig, moe: Optional[Mapping] = None) -> None:
        super().__init__(config)
        # Transformer.__init__ hard-codes lightzero's Block; replace the blocks with ours.
        self.blocks = nn.ModuleList([ScaleZeroBlock(config, moe) for _ in range(config.num_layers)])
        self.moe_top_k: Optional[int] = moe['top_k'] if moe is not None and moe['enabled'] else None
        self._router_record: Optional[List[List[Tensor]]] = None

    @property
    def is_moe(self) -> bool:
        return self.moe_top_k is not None

    @contextmanager
    def record_router_logits(self) -> Iterator[List[List[Tensor]]]:
        """Collect, for every forward inside the context, the list of per-layer router logits (N, E)."""
        record: List[List[Tensor]] = []
        previous, self._router_record = self._router_record, record
        try:
            yield record
        finally:
            self._router_record = previous

    def forward(self, sequences: Tensor, past_keys_values: Optional[KeysValues] = None,
                valid_context_lengths: Optional[Tensor] = None, start_pos: int = 0) -> Tensor:
        x = super().forward(sequences, past_keys_values, valid_context_lengths, start_pos)
        if self._router_record is not None and self.is_moe:
            self._router_record.append([block.router_logits for block in self.blocks])
        return x
