"""Between the front ends and the engine: a loaded model's parts, requests submitted and read as event streams."""
