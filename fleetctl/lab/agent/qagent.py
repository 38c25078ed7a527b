"""Simulated agent placeholder."""
