"""Each protocol the server speaks, in a folder of its own: its bodies, its renderers, its routes."""
