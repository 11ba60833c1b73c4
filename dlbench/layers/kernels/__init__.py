"""The math of the sequence layers: pure functions, no parameters, no NNX.

- :mod:`~dlbench.layers.kernels.scan`: the scan primitives and THE backend dispatch (``fused_scan``),
  ``linear_scan``, ``scan_chunks``, sequence parallelism.
- :mod:`~dlbench.layers.kernels.oscillatory`: LinOSS / D-LinOSS discretizations, projections, their
  LTI block formulations ("blocked", "chunked-Toeplitz") and initialisation (ring, uniform).
- :mod:`~dlbench.layers.kernels.selective`: the selective scan of S6 / Mamba.
- :mod:`~dlbench.layers.kernels.init`: the one U(+-bound) initialiser.
- :mod:`~dlbench.layers.kernels.dtypes`: the dtypes a recurrence runs in.
"""
