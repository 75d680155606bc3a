"""Common interface and hook helpers shared by all method families."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import nn


class Method:
    """Base class: one class per method, same ``attribute(inputs, target)`` signature."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, model: nn.Module, **params: Any) -> None:
        self.model = model
        self.params: dict[str, Any] = dict(params)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def as_target(target: int | torch.Tensor | list[int], batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"target must be an int or a length-{batch} vector, got shape {tuple(t.shape)}")
    return t


@contextlib.contextmanager
def capture_outputs(modules: Mapping[str, nn.Module], detach: bool = True,
                    reduce: Callable[[torch.Tensor], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Record the forward outputs of ``modules`` (name → module) while the block runs.

    With ``reduce``, each output is replaced inside the hook by ``reduce(output)``
    (e.g. a per-channel maximum), so the full activation is never kept. A module
    called several times keeps its last output. Hooks are removed in ``finally``
    even if the block raises.
    """
    out: dict[str, Any] = {}
    handles = []

    def make(name: str):
        def hook(_m, _inp, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            if reduce is not None:
                out[name] = reduce(t)
            else:
                # clone: in-place ops later in the network (e.g. ReLU(inplace=True)) must
                # not change what we recorded
                out[name] = t.detach().clone() if detach else t

        return hook

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(make(name)))
        yield out
    finally:
        for h in handles:
            h.remove()
