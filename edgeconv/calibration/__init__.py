"""Calibration: data sources, the preprocessing contract, activation statistics and per-backend writers."""
