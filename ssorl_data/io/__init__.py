"""Import and export: D4RL-layout HDF5, Minari datasets, and plain dicts / NPZ files."""
