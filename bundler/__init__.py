"""The export side of the air gap: registry storage tree to bundle."""
