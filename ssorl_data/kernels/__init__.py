"""Kernel backends behind ssorl_data.ops: the C++ build, the numba fallback, pure torch."""

# Why a sample's indices are invalid, as returned by the backends' `first_bad_*`
# checks and worded by ssorl_data.ops.
OK = 0
BAD_EPISODE = 1  # episode_index outside [0, E)
BAD_STEP = 2  # step (global for IDM, local for sub-trajectories) outside its episode
BAD_TABLE = 3  # the episode's rows lie outside the arrays
