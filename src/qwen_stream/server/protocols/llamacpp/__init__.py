"""llama.cpp's own API: /completion, /props, /slots, /apply-template, its /tokenize fields, its error shape."""
