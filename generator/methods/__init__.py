"""Visualisation methods, one module per family behind one small interface.

Every method is a class built on a model (an ``nn.Module`` that maps pixel-space
images in [0, 1] to logits; a registry ``LoadedModel.net`` is one) with

    attribute(inputs: Tensor[B,3,H,W], target: LongTensor[B]) -> Tensor

and a ``params`` dict that fully describes its settings (used in cache keys). Hooks
and patches are always removed in ``finally`` blocks; nothing leaks into the model.
"""
