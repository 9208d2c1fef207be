"""Kernel backends behind ssorl_data.ops: the C++ build, the numba fallback, pure torch.

`spec` holds each op's argument table (checks, fake kernels, error wording),
`backend` the choice and build of the C++ library, `numba_ops` and `torch_ops`
the Python-side kernels, `diagnostics` what `ssorl doctor` reports.
"""

# Why a sample's indices are invalid, as returned by the backends' `first_bad_<op>`
# checks and worded by ssorl_data.kernels.spec.index_error.
OK = 0
BAD_EPISODE = 1  # episode_index outside [0, E)
BAD_STEP = 2  # step (global for IDM, local for sub-trajectories) outside its episode
BAD_TABLE = 3  # the episode's rows lie outside the arrays
