"""Model building blocks; compute goes through ssdk.ops (GEMMs through torch)."""
