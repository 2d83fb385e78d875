"""smec: compress frozen text embeddings for retrieval (concat-decoder MRL and SMEC) with PyTorch Lightning.

Heavy libraries (torch, lightning, faiss, transformers) are imported by the submodules that need them, never here,
so that `smec --help` and `smec embed` start fast.
"""

__version__ = "0.1.0"
