"""Training: from labelled patches to a weights folder and a leave-one-domain-out table.

- ``data``, ``splits``, ``sampling``: the labels tables, the leave-one-domain-out x k-fold plan, balanced batches;
- ``config``: :class:`~amf.training.config.TrainConfig`, the one schema of training settings (TOML, CLI flags);
- ``losses``, ``distributed``, ``pretrained``: focal loss, data-parallel folds, the offline ImageNet starts;
- ``train``: the loop; ``run_folder``: the only code that knows a run folder's layout;
- ``threshold``, ``rescore``, ``export``: the decision threshold from out-of-fold scores, and the weights folder;
- ``crossval``: the leave-one-domain-out results of runs, with and without test-time views;
- ``train_cli``, ``export_cli``, ``crossval_cli``: the ``amf train``, ``export`` and ``crossval`` commands.

It builds on :mod:`amf.inference` (the same model and views) and :mod:`amf.evaluation` (the same metrics).
"""
