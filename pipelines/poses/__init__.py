"""Pose-track processing for skeleton-based anomaly detection: segments and frame scores."""
