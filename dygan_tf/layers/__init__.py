"""The custom layers: DyConv2D (with its ways of computing per-example convolutions)
and instance normalisation.
"""
