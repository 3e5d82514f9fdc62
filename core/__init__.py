"""distillscope core: models, documents, activations and methods. Never imports Qt."""

__version__ = "0.1.0"
