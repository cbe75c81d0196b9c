"""The input side: chat templates, tools, FIM prompts and grammars turn a request into prompt ids and parameters."""
