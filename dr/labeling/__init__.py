"""Real video readers (DL3DV), the inverse renderer and DiffusionLight as pseudo-labellers."""
