"""Identity verification: liveness challenge, evidence, face comparison, coaching watch."""
