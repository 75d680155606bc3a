"""What does a deep CNN learn? — precompute CNN visualisations and write a MkDocs site.

The package reads top-down in the order data flows (each layer imports only from those above it):

1. inputs       ``config`` (TOML tables checked against defaults), ``profiles`` (how much work: preview on a
                CPU, full on a GPU), ``datasets`` (the labelled photo sets: fetched, checked, or found in a
                mirror; ``python -m generator data``), ``imagenet`` (class indices, WordNet
                ids, labels; the ImageFolder and 1,000-class-sample readers), ``preprocess`` (photo →
                input), ``models`` (registry, weights), ``images`` (validated photo set; ``load_rgb``
                opens every photo), ``image_folder`` (any photo folder, streamed for the atlas),
                ``probes`` (the findings' labelled probe photos), ``cache`` (content-addressed results;
                ``key`` makes every key), ``executor`` (``compute``: the one call that runs keyed work here
                or as Ray tasks), ``util``, ``progress`` (bars on a terminal, plain lines in a log),
                ``allocator`` (freed host memory kept for the next pass: fewer page faults on a CPU).
2. methods      ``methods/``: one class per visualisation method (activity, attribution, neuron
                deconvnet, pixel-space AM), ``base`` (hooks: ``capture_outputs``, ``output_shapes``;
                batch-norm folding), ``patch_forward`` (occlusion recomputes only what its square reaches),
                ``objectives`` (what activation maximisation maximises) and ``deepsim/`` (the image
                generator behind DGN-AM and PPGN; its training, ``evaluate`` and ``judge_eval``
                commands are scripts at the bottom of the flow: they also use ``metrics`` and ``render``).
3. metrics      ``metrics/``: the findings' checks as functions of an explainer and photos with typed
                results (``class_check``, ``sanity``, ``faithfulness``, ``invariance``, ``fragility``,
                ``selectivity``, ``model_table``; ``checks``: the explainer), ``verdicts`` and ``verdict_*`` (every verdict
                and the sentences it produces), ``similarity``, ``transfer`` (the judge table), ``receptive_field``,
                ``unit_stats`` (streaming top-k, histograms and receptive-field crops for the atlas).
4. render       ``render``: tensors → pictures (one image writer, one normalisation rule).
5. pages        ``site`` + ``templates/``: Markdown pages from sections; ``findings_pages`` (the findings'
                figures and pages); ``figures`` (what a figure shows
                and whose photo it is, as the stage that wrote it recorded it: captions, credits, ``export``).
6. stages       ``stages/``: glue — cache → methods/metrics → render → page sections; they
                exchange results only through declared artifacts (see ``stages/__init__``); ``home``
                runs last (the home page's figure and headline numbers).
7. build, cli   ``build`` (checks config and stage order, runs the stages), ``workload`` (what each stage sends
                through each classifier, from its settings), ``plan`` (calibration × that work = the estimate
                printed before any work, the ETA, the "About this build" page), ``cli`` (commands).
"""

CACHE_NEUTRAL = True  # the package map (docstring) only

__version__ = "0.1.0"
