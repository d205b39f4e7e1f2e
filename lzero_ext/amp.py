"""GPU speed options of the learn step and inference: bf16 autocast (``policy.amp``) and
``torch.compile`` of the world model (``policy.compile``). Both are off by default.

* :func:`autocast` runs a region under ``torch.autocast(..., dtype=torch.bfloat16)``. Given the
  model, it also casts the outputs of the observation encoder and the heads back to float32 while
  the region lasts: lightzero turns them into numpy arrays (MCTS roots, values, policy logits),
  and numpy has no bfloat16. The backward pass runs outside the region, as autocast wants.
* :func:`compile_world_model` compiles the transformer blocks and the observation encoder in place
  (parameter names and checkpoints are unchanged), as two compiled forwards per module: one for the
  learn step (train mode with autograd; fixed batch shapes, compiled static) and one for inference
  (collection, evaluation and every MCTS simulation; compiled with dynamic shapes, since the number of
  roots and the KV-cache length change from call to call). After both have run once, further calls
  compile nothing new; :func:`compiled_graph_count` counts the graphs TorchDynamo has built, so a
  check can assert that. Where ``torch.compile`` cannot work (Python without TorchDynamo, no C++
  compiler for CPU code, no Triton on a GPU) or a module fails to compile at its first call, one
  warning line says so and that module runs eagerly.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(4, 4)
    >>> with autocast('bf16', 'cpu'):
    ...     layer(torch.randn(2, 4)).dtype
    torch.bfloat16
    >>> with autocast('off', 'cpu'):
    ...     layer(torch.randn(2, 4)).dtype
    torch.float32
"""
import contextlib
import logging
import os
import shutil
from typing import Any, Callable, FrozenSet, Iterator, List, Optional, Union

import torch
from torch import nn

logger = logging.getLogger(__name__)
AMP_MODES: FrozenSet[str] = frozenset({'off', 'bf16'})
# Policy-config keys (documented once, in policies.scalezero.MULTITASK_POLICY_KEYS): amp, compile.


def validate_amp(mode: str) -> str:
    """``mode`` if it is one of ``AMP_MODES``, else one clear ``ValueError``."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {sorted(AMP_MODES)}, got {mode!r}")
    return mode


def _to_float32(_module: nn.Module, _inputs: Any, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.dtype == torch.bfloat16:
        return output.float()
    return output


def _output_modules(model: nn.Module) -> List[nn.Module]:
    """The modules whose outputs leave the model: the observation encoder and the four heads."""
    world_model = getattr(model, 'world_model', model)
    names = ('head_value', 'head_rewards', 'head_policy', 'head_observations')
    return [world_model.tokenizer.encoder, *(getattr(world_model, name) for name in names)]


@contextlib.contextmanager
def autocast(mode: str, device: Union[str, torch.device], model: Optional[nn.Module] = None) -> Iterator[None]:
    """bf16 autocast on ``device``'s type when ``mode == 'bf16'`` (``'off'``: nothing changes). With ``model``
    (a ScaleZero model or world model), its encoder and head outputs come out in float32."""
    if validate_amp(mode) == 'off':
        yield
        return
    handles = [m.register_forward_hook(_to_float32) for m in _output_modules(model)] if model is not None else []
    try:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    finally:
        for handle in handles:
            handle.remove()


def compile_unavailable_reason(device: Union[str, torch.device]) -> Optional[str]:
    """Why ``torch.compile`` cannot work for ``device`` here, or None when it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python"
    if torch.device(device).type == 'cuda':
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    compiler = os.environ.get('CXX', 'g++')
    return None if shutil.which(compiler) or shutil.which('c++') else f"no C++ compiler ({compiler}) on PATH"


def compiled_graph_count() -> int:
    """Graphs TorchDynamo has compiled in this process so far (first compilations and recompilations);
    unchanged across calls means nothing was recompiled."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _learn_or_inference(module: nn.Module, learn: Callable, inference: Callable) -> Callable:
    """Calls ``learn`` for a learn-step call (train mode with autograd), else ``inference``."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if module.training and torch.is_grad_enabled():
            return learn(*args, **kwargs)
        return inference(*args, **kwargs)
    return call


def _eager_fallback(module: nn.Module, compiled: Callable) -> Callable:
    """``compiled``, which drops to the module's eager call (with one warning) if compiling raises."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # a compile failure; a genuine error raises again in the eager call
            message = str(error).strip().splitlines()[0] if str(error).strip() else ''
            logger.warning(f"torch.compile failed for {type(module).__name__} ({type(error).__name__}: {message[:200]}); "
                           f"running it eagerly")
            module._compiled_call_impl = None  # nn.Module.compile's slot: back to the plain call
            return module._call_impl(*args, **kwargs)
    return call


def compile_world_model(model: nn.Module, *, device: Union[str, torch.device], enabled: bool = True,
                        backend: str = 'inductor') -> bool:
    """``torch.compile`` in place the transformer blocks and the observation encoder of ``model`` (a ScaleZero
    model or world model) with ``backend``, the learn step's and the inference forwards separately; returns
    whether they were compiled. Compilation itself happens at the first call of each."""
    if not enabled:
        return False
    reason = compile_unavailable_reason(device)
    if reason is not None:
        logger.warning(f"--compile: torch.compile is unavailable here ({reason}); the world model runs eagerly")
        return False
    world_model = getattr(model, 'world_model', model)
    for module in (*world_model.transformer.blocks, world_model.tokenizer.encoder):
        learn = torch.compile(module._call_impl, backend=backend, dynamic=False)
        inference = torch.compile(module._call_impl, backend=backend, dynamic=True)
        module._compiled_call_impl = _eager_fallback(module, _learn_or_inference(module, learn, inference))
    logger.info(f"torch.compile: {len(world_model.transformer.blocks)} transformer blocks and the encoder")
    return True
