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


class _StopForward(Exception):
    """Raised by a hook of :func:`capture_outputs` to end a forward pass early."""

    def __init__(self, token: object) -> None:
        super().__init__()
        self.token = token


@contextlib.contextmanager
def capture_outputs(modules: Mapping[str, nn.Module], detach: bool = True,
                    reduce: Callable[[torch.Tensor], Any] | None = None, read: str = "output",
                    stop_after: str | None = None) -> Iterator[dict[str, Any]]:
    """Record the forward outputs of ``modules`` (name → module) while the block runs.

    With ``reduce``, each output is replaced inside the hook by ``reduce(output)``
    (e.g. a per-channel maximum), so the full activation is never kept. A module
    called several times keeps its last output. Hooks are removed in ``finally``
    even if the block raises.

    ``detach=False`` keeps the tensor itself (no copy), so gradients flow through it.
    ``read="input"`` records the module's first positional input instead of its output
    (e.g. the features entering a classifier head). ``stop_after=name`` ends the forward
    pass as soon as that module has run (the rest of the network is skipped): the
    ``with`` block is left at that point, without an error.
    """
    if read not in ("output", "input"):
        raise ValueError(f"read must be 'output' or 'input', got {read!r}")
    out: dict[str, Any] = {}
    handles = []
    token = object()

    def make(name: str):
        def hook(_m, inputs, output):
            value = inputs if read == "input" else output
            t = value[0] if isinstance(value, (tuple, list)) else value
            if reduce is not None:
                out[name] = reduce(t)
            else:
                # clone: in-place ops later in the network (e.g. ReLU(inplace=True)) must
                # not change what we recorded
                out[name] = t.detach().clone() if detach else t
            if name == stop_after:
                raise _StopForward(token)

        return hook

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(make(name)))
        yield out
    except _StopForward as stop:
        if stop.token is not token:  # another capture's stop: not ours to swallow
            raise
    finally:
        for h in handles:
            h.remove()


def output_shapes(net: nn.Module, modules: Mapping[str, nn.Module], input_size: int) -> dict[str, tuple[int, ...]]:
    """Shape of each module's output without the batch dimension (one forward pass of a
    blank 1×3×S×S image on the network's device)."""
    device = next(net.parameters()).device
    with torch.no_grad(), capture_outputs(modules) as out:
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    return {name: tuple(int(d) for d in out[name].shape[1:]) for name in modules}
