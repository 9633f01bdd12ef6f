"""Layer 0: the typed config schema, the ml_collections base config, the encoding presets."""
