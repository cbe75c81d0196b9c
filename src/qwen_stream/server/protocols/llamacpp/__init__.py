"""llama.cpp's own API: its /embedding route (the rest of llama-server's API arrives with issue 25)."""
