"""Kernel backends behind ssorl_data.ops: the C++ build and the numba fallback."""
