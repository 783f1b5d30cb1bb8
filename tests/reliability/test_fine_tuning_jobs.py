"""Fine-tuning through a real `yun serve`, with the official client (issue 13):

- the real trainer teaches the tiny model a fixed answer through /v1/fine_tuning/jobs, and the served ft:
  model gives it where the base does not, billed its trained tokens once;
- `kill -9` of Yun mid-job (the fake trainer, slowed, dies with it): started again on the same data, the
  job resumes from its last checkpoint and succeeds, billed exactly once, and the ledger balances.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, func, select, text

from tests.conftest import _postgres_database
from tests.reliability.conftest import MODEL, PRICE, MoneyServer, audit_ledger
from tests.reliability.jobs import ANSWER, TINY_RECIPE, WAIT_S, ask, dataset, until_done
from tests.support.server import answers
from tests.support.tiny_model import tiny_model_path
from yun.store.orm import TrainingComputeRow

pytestmark = pytest.mark.reliability
FAKE_TRAINER = Path(__file__).parents[1] / "support" / "fake_trainer.py"


class JobServer(MoneyServer):
    def __init__(self, root: Path, env: dict[str, str], database: str | None = None) -> None:
        super().__init__(
            root,
            args=["--no-default-models"],
            env={"YUN_ENGINE__PARALLEL": "2", "YUN_ENGINE__CONTEXT_PER_SLOT": "512", "YUN_JOBS__THREADS": "1", **env},
            ready=answers,
            start_timeout_s=WAIT_S,
            database=database,
        )
        self.database_url = database or f"sqlite:///{self.db_path}"
        self.audited: Path | str = database or self.db_path
        """What `audit_ledger` reads: the SQLite file, or the PostgreSQL database's URL."""

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def funded_key(self, name: str) -> str:
        with self.admin() as c:
            r = c.put(f"/admin/prices/{MODEL}", json={**PRICE, "training": "1000"})
            assert r.status_code == 200, r.text
        return self.new_key(self.new_org(name, "10"))


@pytest.fixture
def server_env() -> dict[str, str]:
    return {}


@pytest.fixture
def server_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the server's own SQLite file; parametrized "postgresql": a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgresql":
        yield from _postgres_database()
    else:
        yield None


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str], server_database: str | None) -> Iterator[JobServer]:
    s = JobServer(tmp_path, server_env, server_database)
    s.start()
    try:
        s.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("server_env", [{"YUN_JOBS__TRAINER_OPTIONS": json.dumps(TINY_RECIPE)}])
def test_a_job_teaches_an_answer_that_its_fine_tuned_model_serves(server: JobServer) -> None:
    key = server.funded_key("learner")
    client = server.client(key)
    f = client.files.create(file=("train.jsonl", dataset()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=f.id,
        suffix="codeword",
        seed=7,
        hyperparameters={"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 10},
    )
    done = until_done(client, job.id)
    assert done.status == "succeeded", done.error
    steps = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.message.startswith("Step")]
    losses = [s["train_loss"] for s in sorted(steps, key=lambda s: s["step"])]
    assert len(losses) == 72 and sum(losses[-8:]) < sum(losses[:8]) / 4  # it learned: the loss fell
    cold = ask(client, MODEL)
    assert cold != ANSWER
    assert ask(client, done.fine_tuned_model) == ANSWER
    # The same prompt on the base right after its fine-tune's (same replica, the slot that has it cached)
    # answers as the base did cold: no cache computed with one adapter serves another (llama.cpp #26207).
    assert ask(client, MODEL) == cold
    (record,) = [r for r in server.org_get(key, "usage/records")["data"] if r["endpoint"] == "fine_tuning"]
    assert record["training_tokens"] == done.trained_tokens > 0 and record["status"] == "ok"
    assert record["cost_nanodollars"] == done.trained_tokens * 1_000_000
    audit_ledger(server.db_path)


@pytest.mark.parametrize(
    "server_env",
    [
        {
            "YUN_JOBS__TRAINER_COMMAND": json.dumps(
                [sys.executable, str(FAKE_TRAINER), "--spec", "{spec}", "--events", "{events}"]
            ),
            "FAKE_TRAINER_STEP_S": "0.3",
        }
    ],
)
@pytest.mark.parametrize("server_database", ["sqlite", "postgresql"], indirect=True)
def test_a_job_survives_a_kill_9_of_yun_and_is_billed_once(server: JobServer) -> None:
    key = server.funded_key("survivor")
    client = server.client(key)
    f = client.files.create(file=("train.jsonl", dataset(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, hyperparameters={"n_epochs": 3})
    deadline = time.monotonic() + WAIT_S
    while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    killed_at = datetime.now(UTC)
    server.kill9()  # the trainer dies with it (PR_SET_PDEATHSIG), mid-epoch 2
    server.start()
    done = until_done(client, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
    assert any("was lost (Yun restarted)" in m for m in messages), messages
    assert any(m.startswith("Resumed from the checkpoint of epoch") for m in messages), messages
    records = [r for r in server.org_get(key, "usage/records")["data"] if r["endpoint"] == "fine_tuning"]
    assert len(records) == 1 and records[0]["training_tokens"] == done.trained_tokens == 12 * 3 * 10
    assert server.org_get(key, "balance")["held_nanodollars"] == 0
    audit_ledger(server.audited)
    # Its compute: the run killed with Yun (up to the trainer's last write, not the restart) and the resumed
    # one, each recorded once; the job's CPU-seconds are theirs, no more.
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as db:
            where = {"job": job.id}
            runs = db.execute(
                text("SELECT run, SUM(seconds), COUNT(*) FROM training_compute WHERE job_id = :job GROUP BY run"), where
            ).all()
            cpu_seconds = db.execute(
                text("SELECT compute_seconds FROM fine_tuning_jobs WHERE id = :job"), where
            ).scalar()
            lost = select(func.max(TrainingComputeRow.ended_at)).where(
                TrainingComputeRow.job_id == job.id, TrainingComputeRow.run == 1
            )
            lost_at = db.execute(lost).scalar()
    finally:
        engine.dispose()
    assert lost_at is not None and lost_at.replace(tzinfo=lost_at.tzinfo or UTC) <= killed_at + timedelta(seconds=1)
    assert sorted(r[0] for r in runs) == [1, 2] and all(n <= 2 for *_, n in runs), runs  # 2: across midnight
    assert cpu_seconds == sum(int(r[1]) for r in runs) * 1  # YUN_JOBS__THREADS=1
