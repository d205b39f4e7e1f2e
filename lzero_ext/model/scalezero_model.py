"""ScaleZero models registered in DI-engine's ``MODEL_REGISTRY``: ``ScaleZeroModel`` (one common
discrete action space, e.g. Atari's full 18 actions) and ``SampledScaleZeroModel`` (continuous
actions of per-task dims, for sampled MCTS, e.g. DMC).

Both reuse lightzero ``UniZeroModel``'s ``initial_inference`` / ``recurrent_inference`` (same
signatures, plus a trailing ``task_id``) around a ``MultiTaskWorldModel``: lightzero's single-task route
(its ``UniZeroMCTSCtree``, ``SampledUniZeroMCTSCtree`` and ``UniZeroGameBuffer`` call them positionally, without a
task). ``task_id=None`` means "the bound task" (``model.bind_task(t)``, the adapter for that route; a one-task
model is bound to its task from the start).

Observation encoders (the paper's section 3; docs/architecture.md): image tasks share one encoder,
the paper's ViT (``encoder='vit'``) or lightzero's ``RepresentationNetworkUniZero`` (a grid variant
for small boards such as MinAtar's); vector tasks get one ``RepresentationNetworkMLP`` each (their
sizes may differ); text tasks (token ids, e.g. Jericho) share one pretrained ``TextEncoder`` with a
trained projection; a shared final latent norm (LayerNorm, or SimNorm) follows each of them.

A mixed batch of several tasks' envs is served by ``lzero_ext.model.cached_inference`` (task ids and
the KV cache as arguments) and ``lzero_ext.model.sequence_forward`` (training sequences).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ding.utils import MODEL_REGISTRY, SequenceType
from easydict import EasyDict
from torch import Tensor, nn

from lzero.model.common import MZNetworkOutput, RepresentationNetworkMLP, SimNorm
from lzero.model.unizero_model import UniZeroModel
from lzero.model.unizero_world_models.tokenizer import Tokenizer

from lzero_ext.model.grid_encoder import LIGHTZERO_IMAGE_SIZES, image_representation_network
from lzero_ext.model.modalities import FlatObservation, ObservationLayout, shape_tuple
from lzero_ext.model.text_encoder import TextEncoder
from lzero_ext.model.task_routing import TaskAware, TaskSwitch
from lzero_ext.model.vit_encoder import build_vit_encoder
from lzero_ext.model.world_model import MultiTaskWorldModel, TaskBinding

OBS_TYPES = frozenset({'image', 'vector', 'text'})
IMAGE_ENCODERS = frozenset({'resnet', 'vit'})


class ObservationEncoder(TaskAware):
    """Encoder body (shared, or a ``TaskSwitch`` of per-task bodies), shared latent norm, optional
    'concat' task embedding appended to the latent: ``(B, *obs_shape_t) -> (B, embed_dim)``.

    Example:
        >>> bodies = TaskSwitch([nn.Linear(5, 8), nn.Linear(17, 8)])
        >>> enc = ObservationEncoder(bodies, nn.LayerNorm(8), task_embedding=nn.Embedding(2, 4))
        >>> enc.active_task = bodies.active_task = 1
        >>> enc(torch.randn(3, 17)).shape
        torch.Size([3, 12])
    """

    def __init__(self, body: nn.Module, norm: nn.Module, task_embedding: Optional[nn.Embedding] = None, *,
                 max_batch: Optional[int] = None) -> None:
        super().__init__()
        self.body, self.norm, self.task_embedding = body, norm, task_embedding
        self.max_batch = max_batch  # largest number of observations the body encodes in one call (None: all)

    def forward(self, x: Tensor) -> Tensor:
        if self.max_batch and x.shape[0] > self.max_batch:  # in chunks: same result, cache-friendly on CPUs
            z = self.norm(torch.cat([self.body(chunk) for chunk in x.split(self.max_batch)]))  # (B, D_latent)
        else:
            z = self.norm(self.body(x))                                              # (B, D_latent)
        if self.task_embedding is not None:
            e = self.task_embedding.weight[self.active_task].expand(z.shape[0], -1)  # (B, d_task)
            z = torch.cat([z, e], dim=-1)                                            # (B, D)
        return z


def build_observation_encoder(cfg: EasyDict, observation_shapes: Sequence[Union[int, SequenceType]], *,
                              num_res_blocks: int, num_channels: int, activation: nn.Module,
                              downsample: bool) -> ObservationEncoder:
    """Shared image encoder, per-task vector MLPs or shared text encoder, per ``cfg.obs_type``, with the shared
    latent norm; tasks of several types (``cfg.obs_type_list``) get one body per modality
    (:mod:`lzero_ext.model.modalities`)."""
    concat = cfg.task_embed_option == 'concat'
    latent_dim = cfg.embed_dim - cfg.task_embed_dim if concat else cfg.embed_dim
    types = observation_types(cfg)
    build = dict(num_res_blocks=num_res_blocks, num_channels=num_channels, activation=activation, downsample=downsample)
    if len(set(types)) > 1:
        body = _modality_bodies(cfg, types, observation_shapes, latent_dim, **build)
    elif cfg.obs_type == 'image':
        shapes = {tuple(shape) for shape in observation_shapes}
        if len(shapes) != 1:
            raise ValueError(f"image tasks share one encoder and need one observation shape, got {sorted(shapes)}")
        shape = shapes.pop()
        body = _image_body(cfg, shape, latent_dim, **dict(build, downsample=_downsamples(downsample, shape)))
    elif cfg.obs_type == 'text':  # token ids of any length: one pretrained encoder for every task
        body = _text_body(cfg, latent_dim)
    else:
        body = TaskSwitch([_vector_body(cfg, shape, latent_dim, activation) for shape in observation_shapes],
                          input_widths=[int(np.prod(shape)) for shape in observation_shapes])
    norm = nn.LayerNorm(latent_dim) if cfg.latent_norm == 'layernorm' else SimNorm(cfg.group_size)
    task_embedding = nn.Embedding(cfg.num_tasks, cfg.task_embed_dim) if concat else None
    return ObservationEncoder(body, norm, task_embedding, max_batch=cfg.encoder_max_batch)


def observation_types(cfg: EasyDict) -> List[str]:
    """Each task's observation type: ``cfg.obs_type_list``, or ``cfg.obs_type`` for every task."""
    types = list(cfg.obs_type_list or [cfg.obs_type] * cfg.num_tasks)
    unknown = sorted({t for t in types if t not in OBS_TYPES})
    if unknown:
        raise ValueError(f"obs_type must be one of {sorted(OBS_TYPES)}, got {unknown[0]!r}")
    return types


def _image_body(cfg: EasyDict, shape: Any, latent_dim: int, *, num_res_blocks: int, num_channels: int,
                activation: nn.Module, downsample: bool) -> nn.Module:
    if cfg.encoder not in IMAGE_ENCODERS:
        raise ValueError(f"encoder must be one of {sorted(IMAGE_ENCODERS)}, got {cfg.encoder!r}")
    if cfg.encoder == 'vit':
        return build_vit_encoder(tuple(shape), latent_dim, cfg.vit)
    body = image_representation_network(  # lightzero's ResNet, or a grid encoder for small boards
        tuple(shape), num_res_blocks, num_channels, downsample, activation=activation, norm_type=cfg.norm_type,
        embedding_dim=latent_dim, group_size=cfg.group_size)
    body.sim_norm = nn.Identity()  # its built-in SimNorm gives way to the encoder's latent norm
    return body


def _text_body(cfg: EasyDict, latent_dim: int) -> nn.Module:
    return TextEncoder(latent_dim, model_path=cfg.text_encoder.model_path, freeze=cfg.text_encoder.freeze,
                       cache_size=cfg.text_encoder.cache_size)


def _vector_body(cfg: EasyDict, shape: Any, latent_dim: int, activation: nn.Module) -> nn.Module:
    mlp = RepresentationNetworkMLP(int(np.prod(shape)), hidden_channels=latent_dim, layer_num=2,
                                   activation=activation, norm_type=cfg.norm_type, group_size=cfg.group_size)
    mlp.sim_norm = nn.Identity()
    return mlp


def _downsamples(downsample: bool, shape: Sequence[int]) -> bool:
    """``model.downsample`` applies to the image sizes lightzero's encoder downsamples (e.g. Atari's 64x64); small
    grids (MinAtar's 10x10) keep every cell, so one setting serves a run with both."""
    return downsample and shape[1] in LIGHTZERO_IMAGE_SIZES


def _modality_bodies(cfg: EasyDict, types: Sequence[str], observation_shapes: Sequence[Any], latent_dim: int,
                     *, activation: nn.Module, downsample: bool, **image_kwargs: Any) -> TaskSwitch:
    """One body per modality: images of one shape share one, text tasks share the text encoder, every vector
    task has its own MLP; each task reads its flat slice of a mixed batch (``FlatObservation``)."""
    bodies: Dict[Tuple[Any, ...], nn.Module] = {}
    per_task, widths = [], []
    for task_id, (kind, shape) in enumerate(zip(types, observation_shapes)):
        shape = shape_tuple(shape)
        key = (kind, shape) if kind == 'image' else (kind,) if kind == 'text' else (kind, task_id)
        if key not in bodies:
            bodies[key] = (_image_body(cfg, shape, latent_dim, activation=activation, **image_kwargs,
                                       downsample=_downsamples(downsample, shape)) if kind == 'image'
                           else _text_body(cfg, latent_dim) if kind == 'text'
                           else _vector_body(cfg, shape, latent_dim, activation))
        per_task.append(FlatObservation(bodies[key], shape))
        widths.append(int(np.prod(shape)))
    return TaskSwitch(per_task, input_widths=widths)


@MODEL_REGISTRY.register('ScaleZeroModel')
class ScaleZeroModel(UniZeroModel):
    """ScaleZero: one UniZero-style world model for many tasks (common discrete action space).

    Arguments mirror lightzero's ``UniZeroModel``: ``observation_shape`` (shared, unless
    ``world_model_cfg.observation_shape_list``), ``action_space_size`` (the common discrete action
    space; it overrides ``world_model_cfg.action_space_size``), ``num_res_blocks``, ``num_channels``,
    ``activation`` (default GELU-tanh), ``downsample`` and ``norm_type`` of the image encoder (and
    of the vector MLPs), ``world_model_cfg`` (keys and defaults: ``MultiTaskWorldModel.config`` and
    ``default_config()``). Other LightZero model-config keys (read by the policy) are ignored.

    Example:
        >>> cfg = dict(num_tasks=2, obs_type='image', embed_dim=32, num_heads=2, num_layers=1, env_num=2,
        ...            max_blocks=4, max_tokens=8, context_length=4, moe=dict(enabled=True, num_experts=4))
        >>> model = ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=18, world_model_cfg=cfg)
        >>> _ = model.eval()
        >>> last_obs, obs, first_step = torch.zeros(2, 3, 64, 64), torch.rand(2, 3, 64, 64), [-1, -1]
        >>> out = model.initial_inference(last_obs, first_step, obs, np.zeros(2, dtype=int), task_id=1)  # collect form
        >>> out.policy_logits.shape, out.value.shape, out.latent_state.shape
        (torch.Size([2, 18]), torch.Size([2, 101]), torch.Size([2, 1, 32]))
        >>> with model.bind_task(1):   # lightzero's MCTS and buffer call without task_id
        ...     out = model.initial_inference(last_obs, first_step, obs, np.zeros(2, dtype=int))
    """

    continuous_action_space: bool = False

    def __init__(self, observation_shape: SequenceType = (3, 64, 64), action_space_size: int = 18,
                 num_res_blocks: int = 1, num_channels: int = 64, activation: Optional[nn.Module] = None,
                 downsample: bool = True, norm_type: str = 'LN', world_model_cfg: Optional[dict] = None,
                 **kwargs: Any) -> None:
        nn.Module.__init__(self)  # UniZeroModel.__init__ builds single-task encoders; only its inference is reused
        world_model_cfg = dict(world_model_cfg or {})
        if world_model_cfg.setdefault('continuous_action_space', self.continuous_action_space) \
                != self.continuous_action_space:
            raise ValueError(f"{type(self).__name__} needs continuous_action_space={self.continuous_action_space}")
        cfg = MultiTaskWorldModel.resolve_config(dict(world_model_cfg, action_space_size=action_space_size,
                                                      norm_type=norm_type))
        if cfg.max_tokens != 2 * cfg.max_blocks:
            raise ValueError("max_tokens must be 2 * max_blocks: each timestep has an observation and an action token")
        self.action_space_size = cfg.action_space_size
        self.observation_shapes: List[Any] = list(cfg.observation_shape_list or [observation_shape] * cfg.num_tasks)
        if len(self.observation_shapes) != cfg.num_tasks:
            raise ValueError(f"observation_shape_list needs {cfg.num_tasks} entries")
        encoder = build_observation_encoder(
            cfg, self.observation_shapes, num_res_blocks=num_res_blocks, num_channels=num_channels,
            activation=nn.GELU(approximate='tanh') if activation is None else activation, downsample=downsample)
        self.world_model = MultiTaskWorldModel(cfg, Tokenizer(encoder=encoder, decoder_network=None, with_lpips=False))
        self.world_model.observation_layout = ObservationLayout(
            shapes=tuple(shape_tuple(shape) for shape in self.observation_shapes),
            obs_types=tuple(observation_types(cfg)))

    # Aliases of lightzero's UniZeroModel attributes, as properties so the modules are registered only once.
    @property
    def tokenizer(self) -> Tokenizer:
        return self.world_model.tokenizer

    @property
    def representation_network(self) -> nn.Module:
        return self.world_model.tokenizer.encoder

    @property
    def task_id(self) -> int:
        return self.world_model.task_id

    def bind_task(self, task_id: Optional[int]) -> TaskBinding:
        """Bind ``task_id`` now; ``with model.bind_task(t):`` restores the previous task on exit."""
        return self.world_model.bind_task(task_id)

    def initial_inference(self, obs_batch: Tensor, action_batch: Optional[Any] = None,
                          current_obs_batch: Optional[Tensor] = None, start_pos: Any = 0,
                          task_id: Optional[int] = None) -> MZNetworkOutput:
        """lightzero UniZero's initial inference for task ``task_id`` (None: the bound task). A mixed batch of
        several tasks goes through ``lzero_ext.model.cached_inference`` instead."""
        with self.bind_task(task_id):
            return super().initial_inference(obs_batch, action_batch, current_obs_batch, start_pos)

    def recurrent_inference(self, state_action_history: List[Any], simulation_index: int = 0,
                            search_depth: Optional[List[int]] = None, start_pos: Any = 0,
                            task_id: Optional[int] = None) -> MZNetworkOutput:
        """lightzero UniZero's recurrent inference for task ``task_id`` (None: the bound task)."""
        with self.bind_task(task_id):
            return super().recurrent_inference(state_action_history, simulation_index, search_depth, start_pos)


@MODEL_REGISTRY.register('SampledScaleZeroModel')
class SampledScaleZeroModel(ScaleZeroModel):
    """ScaleZero for continuous actions (sampled MCTS): per-task action embeddings
    ``Linear(a_t -> D)`` and per-task Gaussian policy heads of width ``a_t``, so ``policy_logits``
    of task t is ``(B, 2 * a_t)`` = [mu, sigma], as lightzero's ``SampledUniZeroModel`` returns for
    one task (no padding to the largest dim). Action dims come from
    ``world_model_cfg.action_space_size_list`` (or ``action_space_size`` for all tasks).

    Example:
        >>> cfg = dict(num_tasks=2, obs_type='vector', observation_shape_list=[5, 17], action_space_size_list=[1, 6],
        ...            embed_dim=32, num_heads=2, num_layers=1, env_num=2, max_blocks=4, max_tokens=8,
        ...            context_length=4)
        >>> model = SampledScaleZeroModel(action_space_size=6, world_model_cfg=cfg)
        >>> _ = model.eval()
        >>> out = model.initial_inference(torch.zeros(2, 17), [-1, -1], torch.rand(2, 17), np.zeros(2, dtype=int), task_id=1)
        >>> out.policy_logits.shape
        torch.Size([2, 12])
    """

    continuous_action_space: bool = True

    def __init__(self, observation_shape: SequenceType = (24,), action_space_size: int = 6, **kwargs: Any) -> None:
        super().__init__(observation_shape=observation_shape, action_space_size=action_space_size, **kwargs)
