"""Elastic resource pools: providers that launch and terminate agent instances, the pure scale
decider that says what to do, and prices. The master drives it; it imports nothing of the
master's."""
