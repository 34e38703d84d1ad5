"""Evaluator for MIDOG 2025 Track 2: the organisers' metrics to the last digit, plus a readable report.

Teams score locally before they spend a submission, and auditors re-score results, so the numbers in
``aggregates`` must be the ones the official ``evaluate.py`` (DeepMicroscopy/MIDOG25_T2_evaluation_docker)
writes. Everything we add (bootstrap intervals, the best-threshold balanced accuracy, plots) goes next to
those numbers, never into them.

The package is split by job:

- ``figures``: the one in-memory form both input modes reduce to (aligned per-figure arrays);
- ``platform``: the Grand-Challenge evaluation layout and its validation;
- ``flat``: a predictions CSV from ``amf predict`` plus a labels CSV (AMi-Br or MIDOG25 style);
- ``metrics``: pure metric functions, written to reproduce the official arithmetic;
- ``bootstrap``: confidence intervals;
- ``analysis``: the metrics and intervals for the pooled set and for each domain;
- ``output``: the ``metrics.json`` document, written atomically;
- ``summary``: the lines printed to stdout;
- ``report``: plots, a per-domain table and ``report.md`` (the only user of matplotlib);
- ``cli``: ``python -m amf evaluate``.
"""
