"""Utilities: drawing detections next to views of the stack."""
