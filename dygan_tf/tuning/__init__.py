"""The λ search's library: the KerasTuner hypermodel, the search and its results."""
