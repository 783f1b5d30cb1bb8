"""OpenAI-compatible endpoints, one folder each."""
