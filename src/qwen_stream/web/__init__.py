"""The web front end: the Gradio chat page (`qwen-stream web`, or mounted on the server with `serve --web`)."""
