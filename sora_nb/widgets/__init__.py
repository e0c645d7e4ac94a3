"""ipywidgets front ends: live controls and the latent inspector."""
