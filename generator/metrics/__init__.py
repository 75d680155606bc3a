"""Measurements that test the visualisation methods instead of just showing them.

- :mod:`.similarity` — map-to-map similarity (Spearman rank correlation of |map|,
  SSIM, HOG similarity), batched over B×H×W maps.
- :mod:`.checks` — what the findings' checks share: an attribution method as an explainer
  callable ``explain(x, targets) -> maps``, progress counted in results.
- :mod:`.class_check` — the maps for two classes per photo and their class sensitivity.
- :mod:`.sanity` — the model-randomisation sanity check of Adebayo et al. (2018):
  cascading re-initialisation of layers from the top down on a *copy* of the model.
- :mod:`.faithfulness` — deletion / insertion curves (Petsiuk et al., 2018) with
  random-order and centre-prior baselines.
- :mod:`.invariance`, :mod:`.fragility`, :mod:`.selectivity` — input invariance (Kindermans et
  al. 2017), fragility (Ghorbani et al. 2019), selectivity vs importance (Morcos et al. 2018).
- :mod:`.model_table` — parameters, multiply-adds, measured accuracy.
- :mod:`.verdicts` — every verdict of the checks, the summary and the headlines; the sentences of single checks in
  :mod:`.verdict_randomisation`, :mod:`.verdict_checks` (invariance, fragility, deletion/insertion steps) and
  :mod:`.verdict_units` (selectivity and importance of units).

Each check is a function of an explainer callable (or of the model) and photos, returning
dataclasses, with a ``*_task`` beside it for :func:`generator.executor.compute`. Nothing here
writes pages; :mod:`generator.findings_pages` does.
"""
