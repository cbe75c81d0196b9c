"""Wire formats every protocol shares: server-sent events, errors in each protocol's shape."""
