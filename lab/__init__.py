"""The lab: server, agent, signing and simulated hardware composed for the demo, simulations,
benchmarks and tests. Nothing a device installs, and nothing `server/` imports."""
