"""Model definitions: config, the masked transformer, weight conversion, save/load."""
