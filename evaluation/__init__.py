"""The evaluation lab: `gpuops eval` (the whole loop on scenarios in simulated time, scored against two
baselines), detection scored on the twin, the NAB corpus, risk-model training, and the demo's fleet. It drives
the same pipeline as production with the twin's clock; the core never imports it."""
