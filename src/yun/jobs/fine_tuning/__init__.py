"""Fine-tuning jobs: create (checks, hold, record), the runner that trains through the `Cluster` seam, and
the fine-tuned model it makes."""
