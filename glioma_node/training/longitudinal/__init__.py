"""Evaluations of the follow-up comparison (inference.longitudinal) on real and synthetic cases."""
