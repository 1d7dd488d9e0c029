"""Live quality: statistics, scores, alerts, reports."""
