"""Fine-tuning on the real two-node Ray cluster (issue 13 on issue 11's control plane), with the official
client and the real trainer, as a scale-out installation runs it: an active controller and a standby
(`--cluster ray://HEAD:PORT`) and a gateway on PostgreSQL, files in an S3 bucket (moto's server), no
disk shared by design (each process has its own data dir; the trainer runs in its Ray node's directory).

- The job's trainer is a Ray actor (`yun-task-<job>`) with the job's CPU, on the node that has one free.
- The active controller is SIGKILLed mid-training: the trainer goes on (its actor is detached), the
  standby takes over and follows it from where the dead one stopped reading: the job is neither restarted
  nor are any of its events recorded twice.
- The adapter comes back through Ray; the base's replicas are rolled to load it; the ft: model answers
  through the gateway, the base does not. The job is billed its trained tokens once; the ledger balances.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, text

from tests.reliability.conftest import MODEL, PRICE, MoneyServer, audit_ledger
from tests.reliability.jobs import ANSWER, TINY_RECIPE, WAIT_S, ask, dataset, until_done
from tests.support.raycluster import RayCluster
from tests.support.s3 import S3_CREDENTIALS, moto_s3, new_bucket
from tests.support.server import YunServer
from tests.support.tiny_model import tiny_model_path
from tests.support.yun_ray import YunOnRay, until
from yun.cluster.backends.ray import ACTOR_PREFIX, NAMESPACE, TASK_PREFIX

pytestmark = pytest.mark.reliability

TAKEN_OVER = "this process is the active controller"


def test_a_fine_tuning_job_runs_on_ray_and_outlives_its_controller(
    tmp_path: Path, pg_url: str, ray_cluster: RayCluster
) -> None:
    with moto_s3() as endpoint:
        yun = YunOnRay(tmp_path, pg_url, ray_cluster)
        yun.env.update(
            {
                "YUN_FILES__BACKEND": "s3",
                "YUN_FILES__S3_ENDPOINT_URL": endpoint,
                "YUN_FILES__S3_BUCKET": new_bucket(endpoint),
                "YUN_FILES__S3_REGION": S3_CREDENTIALS["region"],
                "YUN_FILES__S3_ACCESS_KEY_ID": S3_CREDENTIALS["access_key_id"],
                "YUN_FILES__S3_SECRET_ACCESS_KEY": S3_CREDENTIALS["secret_access_key"],
                "YUN_JOBS__THREADS": "1",  # the task asks Ray for one CPU: a whole node of this cluster
                "YUN_JOBS__TRAINER_OPTIONS": json.dumps(TINY_RECIPE),
            }
        )
        active = yun.server("controller-a", "controller", server_class=MoneyServer)
        servers: list[YunServer] = [active]
        try:
            active.start()
            yun.deploy(active, MODEL, tiny_model_path(), replicas=1)  # half a CPU: one node stays free
            standby = yun.server("controller-b", "controller", server_class=YunServer, admin_key=active.admin_key)
            gateway = yun.server("gateway", "gateway", server_class=MoneyServer, admin_key=active.admin_key)
            servers += [standby, gateway]
            standby.start()
            gateway.start()
            with active.admin() as c:
                r = c.put(f"/admin/prices/{MODEL}", json={**PRICE, "training": "1000"})
                assert r.status_code == 200, r.text
            key = active.new_key(active.new_org("ray-tuner", "10"))
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=120)

            f = client.files.create(file=("train.jsonl", dataset()), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(
                model=MODEL,
                training_file=f.id,
                suffix="ray",
                seed=7,
                hyperparameters={"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 10},
            )

            # -- its trainer is a Ray actor; the controller that placed it dies mid-training ---------------
            def stepping() -> bool | None:
                events = client.fine_tuning.jobs.list_events(job.id, limit=1000)
                return True if any(e.message.startswith("Step") for e in events) else None

            until(stepping, "the trainer reported a step", timeout=WAIT_S)
            assert TASK_PREFIX + job.id in ray_cluster.named_actors(NAMESPACE)
            assert not list((active.data_dir / "jobs" / job.id).glob("events-*.jsonl"))  # it ran on a Ray node
            active.kill9()
            until(lambda: TAKEN_OVER in standby.stderr() or None, "the standby took over", timeout=WAIT_S)

            done = until_done(client, job.id)
            assert done.status == "succeeded", done.error
            events = list(client.fine_tuning.jobs.list_events(job.id, limit=1000))
            messages = [e.message for e in events]
            assert messages.count("Fine-tuning job started.") == 1, messages  # followed, not started again
            assert not any("resumes from its last checkpoint" in m for m in messages), messages
            steps = [e.data["step"] for e in events if e.message.startswith("Step")]
            assert sorted(steps) == list(range(1, 73)), steps  # each step recorded once, across the take-over
            assert len(list(client.fine_tuning.jobs.checkpoints.list(job.id))) == 3

            # -- the adapter came back through Ray, and the base's replicas serve it -----------------------
            assert ask(client, done.fine_tuned_model) == ANSWER
            assert ask(client, MODEL) != ANSWER
            until(
                lambda: not any(a.startswith(TASK_PREFIX) for a in ray_cluster.named_actors(NAMESPACE)) or None,
                "the task's actor was released",
            )

            # -- money: its trained tokens, once -----------------------------------------------------------
            records = [r for r in gateway.org_get(key, "usage/records")["data"] if r["endpoint"] == "fine_tuning"]
            assert len(records) == 1 and records[0]["status"] == "ok", records
            assert records[0]["cost_nanodollars"] == done.trained_tokens * 1_000_000 > 0
            assert gateway.org_get(key, "balance")["held_nanodollars"] == 0
            audit_ledger(pg_url)
            # Its compute for unit economics: one run (followed across the take-over, not lost and resumed),
            # recorded once, whole, by the controller that saw it end.
            engine = create_engine(pg_url)
            try:
                with engine.connect() as c:
                    runs = c.execute(
                        text("SELECT run, SUM(seconds) FROM training_compute WHERE job_id = :job GROUP BY run"),
                        {"job": job.id},
                    ).all()
            finally:
                engine.dispose()
            assert [r[0] for r in runs] == [1] and int(runs[0][1]) > 0, runs
        finally:
            for server in servers:
                server.kill9()
            ray_cluster.named_actors(NAMESPACE, kill_prefix=TASK_PREFIX)
            ray_cluster.named_actors(NAMESPACE, kill_prefix=ACTOR_PREFIX)
