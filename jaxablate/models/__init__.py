"""Model definitions: config (``config``), the masked transformer (``transformer``), weight conversion (``hf``)."""
