"""`gpuops eval`: the whole loop on scenarios in simulated time, scored against two baselines."""
