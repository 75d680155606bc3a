"""Measurements that test the visualisation methods instead of just showing them.

- :mod:`.similarity` — map-to-map similarity (Spearman rank correlation of |map|,
  SSIM, HOG similarity), batched over B×H×W maps.
- :mod:`.sanity` — the model-randomisation sanity check of Adebayo et al. (2018):
  cascading re-initialisation of layers from the top down on a *copy* of the model.
- :mod:`.faithfulness` — deletion / insertion curves (Petsiuk et al., 2018) with
  random-order and centre-prior baselines.
- :mod:`.model_table` — parameters, multiply-adds, measured accuracy.

Nothing here writes pages; :mod:`generator.stages.findings` does.
"""
