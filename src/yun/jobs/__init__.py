"""Files, fine-tuning and batch jobs (ARCHITECTURE.md): between the API and the gateway."""
