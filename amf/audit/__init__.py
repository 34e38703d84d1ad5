"""``amf audit``: every claim the repository makes, checked from what it ships (docs/audit.md).

- ``context``: what the checks share (a finding, its status, the folders audited);
- ``checks``: weights, data, bundled stack, threshold, leakage, provenance, and ``--retrain``;
- ``results``: the results tables and the numbers in the docs against the per-figure files;
- ``runner``: the checks in order; ``audit_cli``: the command.
"""
