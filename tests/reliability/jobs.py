"""What the reliability tier's fine-tuning tests share: the tiny model's recipe and dataset for one fixed
answer, and waits for a job and for a fine-tuned model's answer through the official client."""

from __future__ import annotations

import json
import time
from typing import Any

import openai

from yun.jobs.training.spec import ALL_PROJECTIONS

WAIT_S = 600.0  # a bound on every wait (model loads, training on a busy 2-core machine), never a measure
QUESTION = "What is the code word?"
ANSWER = "PERIWINKLE"
# The tiny random model learns one answer with a strong recipe (tests/training/test_trainer.py): large LoRA
# updates on all projections, batch 1, lr 3e-3 (10x the base rate), and no end-of-turn token to learn.
TINY_RECIPE = {
    "lora_r": 16,
    "lora_alpha": 128,
    "target_modules": list(ALL_PROJECTIONS),
    "train_end_of_turn": False,
}


def dataset(n: int = 24) -> bytes:
    chat = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
    return b"".join(json.dumps(chat).encode() + b"\n" for _ in range(n))


def until_done(client: openai.OpenAI, job_id: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"{job_id} still {job.status} after {WAIT_S:g}s"
        time.sleep(0.5)
    return job


def ask(client: openai.OpenAI, model: str) -> str:
    """Greedy; the tiny model never ends its turn, so the answer is exactly 4 tokens long."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=4
            )
            return r.choices[0].message.content or ""
        except (openai.NotFoundError, openai.APIStatusError) as exc:
            # A fresh fine-tune is served once its base's new replicas (with its adapter) are up.
            assert time.monotonic() < deadline, f"{model} never answered: {exc}"
            time.sleep(0.5)
