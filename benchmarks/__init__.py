"""Speed and accuracy benchmarks of flipad_sklearn, run as ``python -m benchmarks.<name>``.

Shared problems live in :mod:`benchmarks._harness` (inversion layers and
targets), :mod:`benchmarks.train_zoo` (the generator zoo) and
:mod:`benchmarks.attribution_protocol` / :mod:`benchmarks.attribution_methods`
(the attribution protocol); every benchmark writes its result file through
:func:`benchmarks._results.write_result`.
"""
