"""Registries over the V2 API: the one client for both directions, and a registry as a source."""
