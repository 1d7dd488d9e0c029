"""Cluster mode: node registry and state mirror, placement, the signalling proxy, failover."""
