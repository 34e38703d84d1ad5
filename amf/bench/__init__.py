"""``amf bench``: speed and memory of the inference engine, measured side by side in one run (docs/benchmark.md).

- ``bench``: the measurements; ``reference``: the organisers' reference container's per-stack loop, rebuilt;
- ``bench_cli``: the command.
"""
