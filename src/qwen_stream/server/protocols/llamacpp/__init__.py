"""llama.cpp's own API: /completion, /props, /slots, /apply-template, /embedding, its /tokenize fields, its error
shape."""
