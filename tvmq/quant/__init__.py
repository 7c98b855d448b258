"""Quantization: calibration, parameter derivation and fixed-point helpers."""
