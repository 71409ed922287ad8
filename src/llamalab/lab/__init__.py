"""The benchmark lab: ``llamalab bench`` (llama-bench-style throughput), ``llamalab study``
(the full matrix with a report and charts), ``llamalab profile`` (time per operation)
and ``llamalab synth`` (random-weight models with real shapes).

Each runtime under test runs in its own worker process (``worker.py``), driven by the
parent (``runner.py``); ``stats``, ``report`` and ``charts`` turn samples into results.

The studies' other runtimes: ``ports`` (the registry: find, command, parse, limitations),
``export`` (the same weights in each runtime's format), ``tokenmatch`` (greedy ids against
llamalab's reference), ``npstudy`` (numba-np's dtype audit and profile), ``shards`` and
``ray_cells`` (one study over several machines), ``build`` (build a port from a checkout).
"""
