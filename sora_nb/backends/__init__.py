"""Backends: the embedded model (``embedded``) and diffusers video pipelines (``diffusers_video``)."""
