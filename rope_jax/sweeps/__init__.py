"""Layer 4: the Table 2 grid definition and the results collector."""
