"""Scheduling: the pure fit and the loop that owns cluster state."""
