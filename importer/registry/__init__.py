"""A Registry V2 API client and the registry sink: what ferry push speaks."""
