"""Trainers for every trained component, on accelerate (CPU for tests, one GPU or many for real)."""
