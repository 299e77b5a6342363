"""Autoscaling evaluation: a request trace in GenTD26's format replayed through a replica simulator, for
gpuops' scaler against the reactive and warm-1 baselines and the oracle lower bound."""
