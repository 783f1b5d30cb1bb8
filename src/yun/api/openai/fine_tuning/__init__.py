"""OpenAI's fine-tuning API: /v1/fine_tuning/jobs and its events and checkpoints."""
