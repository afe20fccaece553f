"""The import side of the air gap: verify, inspect, restore into storage, push to a registry."""
