"""One request path for every protocol: body, job, admission, the engine's answers through a renderer."""
