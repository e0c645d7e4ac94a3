"""Backends: the embedded model (``embedded``) and, later, diffusers video pipelines."""
