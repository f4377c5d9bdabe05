"""Scoring synthesised images: slice metrics and scores, the two baselines, volume
metrics, the evaluation report, and the research analyses of a row's error.
"""
