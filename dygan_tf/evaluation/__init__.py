"""Scoring synthesised images: slice metrics and scores, the two baselines, volume
metrics, the evaluation report (the per-row error studies live in the checkout's
research/, not in the installed package).
"""
