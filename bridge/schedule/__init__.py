"""Scheduling under one request budget: a pure policy (`policy`), its Redis state, the runner."""
