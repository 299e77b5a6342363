"""The cost view: GPUs allocated but idle, GPU-hours provisioned against needed per deployment, and GPU-hours lost
to incidents, from each detection cycle's FleetFrame and from the store."""
