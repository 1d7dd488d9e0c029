"""On-site + remote: what a field officer's device sends besides media (GPS fixes)."""
