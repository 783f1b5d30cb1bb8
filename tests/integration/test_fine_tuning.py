"""/v1/fine_tuning/jobs with the official client, on the shared server whose runner runs the fake trainer
(tests/support/fake_trainer.py: the real event protocol, no torch): from upload to a registered fine-tuned
model; bad files named by line; no credit; cancel; a failing and a vanished trainer; other tenants see
nothing. Billing: trained tokens x the training price, held first, settled once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from tests.integration.conftest import Harness
from tests.integration.tenants import admin, client_for, new_org, org_get, set_price
from tests.support.fake_trainer import TOKENS_PER_EXAMPLE
from yun.api.lifespan import sync_deployments

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = TypeVar("T")
# $1,000 per 1M trained tokens: one trained token costs $0.001 (1,000,000 nanodollars).
TRAINING = {"input": "0", "output": "0", "training": "1000"}
BASE = "ft-base"
MSG: Any = {"role": "user", "content": "What is the code word?"}


def example(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": "PERIWINKLE"}]}


def dataset(n: int = 12, bad: str | None = None, at: int = 2) -> bytes:
    lines = [json.dumps(example(i)) for i in range(n)]
    if bad is not None:
        lines[at - 1] = bad
    return ("\n".join(lines) + "\n").encode()


async def upload(client: openai.AsyncOpenAI, n: int = 12) -> Any:
    """A training file of `n` examples, uploaded by the client's organization."""
    return await client.files.create(file=("train.jsonl", dataset(n)), purpose="fine-tune")


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    for _ in range(int(timeout / 0.1)):
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited {timeout:g}s in vain for {what}")


async def finished(client: openai.AsyncOpenAI, job_id: str) -> Any:
    async def probe() -> Any:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    return await until(probe, f"{job_id} to finish")


async def served(client: openai.AsyncOpenAI, model: str | None) -> Any:
    """The fine-tuned model's first answer (its base's replicas are being replaced by ones that load it)."""
    assert model is not None

    async def answered() -> Any:
        try:
            return await client.chat.completions.create(model=model, messages=[MSG], max_tokens=3)
        except openai.NotFoundError:
            return None

    return await until(answered, f"{model} to answer", timeout=120)


async def economics(yun: Harness) -> dict[str, int]:
    """/admin/economics of the last two days summed over the rows of this module's base model."""
    r = await yun.http.get("/admin/economics?days=2&by=model", headers=admin(yun))
    assert r.status_code == 200, r.text
    rows = [row for row in r.json()["data"] if row["model"] == BASE]
    return {k: sum(row[k] for row in rows) for k in ("training_revenue", "training_seconds", "training_cost")}


async def training_records(yun: Harness, key: str) -> list[dict[str, Any]]:
    """The organization's usage records of fine-tuning jobs (one per job that held)."""
    return [r for r in (await org_get(yun, key, "usage/records"))["data"] if r["endpoint"] == "fine_tuning"]


@pytest.fixture(scope="module", autouse=True)
async def base(yun: Harness, tiny_model: Path) -> AsyncIterator[str]:
    """A base model of this module's own (the tiny model's file) with a training price: the jobs' fine-tunes
    roll its deployment, not the one the other modules use."""
    yun.services.catalog.add_local(BASE, tiny_model, "chat", license="apache-2.0")
    await sync_deployments(yun.services)
    await set_price(yun, BASE, TRAINING)
    yield BASE
    for m in yun.services.catalog.list():
        if m.base_model == BASE:
            yun.services.catalog.remove(m.id)
    yun.services.catalog.remove(BASE)
    await sync_deployments(yun.services)


async def test_a_job_trains_a_model_of_the_org_billed_its_trained_tokens(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(
            model=BASE, training_file=f.id, suffix="periwinkle", seed=3, hyperparameters={"n_epochs": 2}
        )
        # Returned at once, validated by the jobs worker: "auto" stays "auto" until then.
        assert job.status == "validating_files" and job.model == BASE and job.training_file == f.id
        assert job.seed == 3 and job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
        done = await finished(client, job.id)
        assert done.hyperparameters.batch_size == 4
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:{BASE}:{org}:periwinkle:{job.id}"
        assert done.trained_tokens == 12 * 2 * TOKENS_PER_EXAMPLE and done.finished_at is not None
        events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        steps = [e for e in events if e.type == "metrics" and e.message.startswith("Step ")]
        assert len(steps) == 6 and events[0].message.startswith("The job has successfully completed"), [
            (e.type, e.message) for e in events[:3]
        ]
        told = [e.message for e in reversed(events)][:3]
        assert told[:2] == [f"Created fine-tuning job: {job.id}", f"Validating training file: {f.id}"]
        assert told[2].startswith("Files validated: 12 examples") and "Moving job to queued state" in told[2]
        checkpoints = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
        assert [c.step_number for c in checkpoints] == [6, 3]
        assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-6"
        assert checkpoints[0].metrics.train_loss is not None  # the epoch's mean loss, as its event said
        assert [j.id async for j in client.fine_tuning.jobs.list()] == [job.id]
    records = await training_records(yun, key)
    assert len(records) == 1 and records[0]["cost_nanodollars"] == 240 * 10**6
    assert (records[0]["training_tokens"], records[0]["prompt_tokens"]) == (240, 0)
    # Training is its own line, by base model, in the usage totals and the month's statement (JSON, CSV).
    (used,) = (await org_get(yun, key, "usage?group_by=model"))["data"]
    assert (used["key"], used["training_tokens"], used["training_cost"]) == (BASE, 240, 240 * 10**6)
    assert (used["requests"], used["prompt_tokens"], used["input_cost"], used["cost"]) == (0, 0, 0, 240 * 10**6)
    month = datetime.fromtimestamp(done.finished_at or 0, UTC).strftime("%Y-%m")
    statement = await org_get(yun, key, f"statements/{month}")
    lines = [(i["model_id"], i["kind"], i["quantity"], i["amount"]["nanodollars"]) for i in statement["line_items"]]
    assert lines == [(BASE, "training_tokens", 240, 240 * 10**6)] and statement["reconciled"] is True
    as_csv = await yun.http.get(
        f"/v1/organization/statements/{month}?format=csv", headers={"Authorization": f"Bearer {key}"}
    )
    assert f"usage,{BASE},training_tokens,240,0.240000000" in as_csv.text.splitlines()
    balance = await org_get(yun, key, "balance")
    assert balance["held_nanodollars"] == 0 and balance["balance_nanodollars"] == 10 * 10**9 - 240 * 10**6
    model = (await yun.http.get(f"/admin/models/{done.fine_tuned_model}", headers=admin(yun))).json()
    assert model["id"] == done.fine_tuned_model, model


@pytest.mark.parametrize(
    ("bad", "problem"),
    [("{not json", "line 2"), (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant")],
)
async def test_a_bad_training_file_is_refused_naming_its_line(yun: Harness, bad: str, problem: str) -> None:
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        # At upload the shape is checked; a file that passed (another purpose's) is checked again by the job.
        f = await upload(client)
        batch = await client.files.create(
            file=("b.jsonl", b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'),
            purpose="batch",
        )
        with pytest.raises(openai.BadRequestError) as info:
            await client.fine_tuning.jobs.create(model=BASE, training_file=batch.id)
        assert info.value.param == "training_file" and "purpose" in info.value.message
        with pytest.raises(openai.BadRequestError) as info:
            await client.files.create(file=("bad.jsonl", dataset(12, bad)), purpose="fine-tune")
        assert problem in info.value.message
        with pytest.raises(openai.NotFoundError) as missing:
            await client.fine_tuning.jobs.create(model=BASE, training_file="file-nope")
        assert missing.value.param == "training_file"
        with pytest.raises(openai.NotFoundError):
            await client.fine_tuning.jobs.create(model="no-such-model", training_file=f.id)
        with pytest.raises(openai.BadRequestError) as embedding:
            await client.fine_tuning.jobs.create(model="minilm", training_file=f.id)
        assert embedding.value.param == "model"
        with pytest.raises(openai.BadRequestError) as method:
            await client.fine_tuning.jobs.create(
                model=BASE,
                training_file=f.id,
                method={"type": "dpo"},  # type: ignore[typeddict-item]
            )
        assert "method" in str(method.value.param)
        assert [j async for j in client.fine_tuning.jobs.list()] == []
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_an_example_too_long_for_the_model_fails_the_job_naming_its_line(yun: Harness) -> None:
    """What only the model can judge (an example's tokens against its context) is checked by the jobs
    worker after create returned: the job fails with the OpenAI-shaped error naming the line, holds nothing."""
    _, key = await new_org(yun, "10")
    long = {"messages": [{"role": "user", "content": "word " * 40_000}, {"role": "assistant", "content": "x"}]}
    async with client_for(yun, key) as client:
        f = await client.files.create(file=("t.jsonl", dataset(12, json.dumps(long), at=5)), purpose="fine-tune")
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)
        assert job.status == "validating_files"
        done = await finished(client, job.id)
        assert done.status == "failed" and done.error is not None
        assert (done.error.code, done.error.param) == ("invalid_file", "training_file")
        assert f"Invalid training_file '{f.id}': line 5: the example is" in done.error.message
        assert "longer than the model's context" in done.error.message
        events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert events[0].level == "error" and events[0].message.startswith("Validation failed: Invalid training_file")
    assert await training_records(yun, key) == []  # it never held: nothing to settle, nothing charged
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_a_job_the_org_cannot_cover_fails_for_quota(yun: Harness) -> None:
    _, key = await new_org(yun, "0.01")  # the hold is the file's ~30 tokens x 12 x 3 epochs at $0.001
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)
        done = await finished(client, job.id)
        assert done.status == "failed" and done.error is not None and done.error.code == "insufficient_quota"
        assert "fine-tuning job needs a hold" in done.error.message
    balance = await org_get(yun, key, "balance")
    assert balance["held_nanodollars"] == 0 and balance["balance_nanodollars"] == 10**7


async def test_a_cancelled_job_pays_for_the_steps_it_completed(yun: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAINER_STEP_S", "0.4")
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)

        async def stepped() -> bool | None:
            events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
            return True if any(e.type == "metrics" for e in events) else None

        await until(stepped, "a step")
        await client.fine_tuning.jobs.cancel(job.id)
        done = await finished(client, job.id)
        assert done.status == "cancelled" and 0 < done.trained_tokens < 12 * 3 * TOKENS_PER_EXAMPLE
    (record,) = await training_records(yun, key)
    assert record["training_tokens"] == done.trained_tokens
    assert record["cost_nanodollars"] == done.trained_tokens * 10**6
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_a_queued_job_cancelled_costs_nothing(yun: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAINER_STEP_S", "0.3")
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        f = await upload(client)
        first = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)
        second = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)  # waits: one at a time

        async def queued() -> bool | None:
            return True if (await client.fine_tuning.jobs.retrieve(second.id)).status == "queued" else None

        await until(queued, "the second job to be validated")
        cancelled = await client.fine_tuning.jobs.cancel(second.id)
        assert cancelled.status == "cancelled"
        await client.fine_tuning.jobs.cancel(first.id)
        await finished(client, first.id)
    never_ran = [r for r in await training_records(yun, key) if r["status"] == "cancelled"]
    assert len(never_ran) == 2 and any(r["training_tokens"] == 0 for r in never_ran)
    assert all(r["cost_nanodollars"] == r["training_tokens"] * 10**6 for r in never_ran)
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_a_failing_trainer_fails_the_job_and_bills_its_steps(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER_FAIL_AT_STEP", "3")
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)
        done = await finished(client, job.id)
    assert done.status == "failed" and done.error is not None and done.error.code == "training_failed"
    assert "step 3" in done.error.message and done.trained_tokens == 2 * 4 * TOKENS_PER_EXAMPLE
    (record,) = await training_records(yun, key)
    assert record["training_tokens"] == 80 and record["status"] == "failed"


async def test_a_trainer_killed_mid_job_resumes_from_its_checkpoint(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER_STEP_S", "0.2")
    _, key = await new_org(yun, "10")
    runner = yun.services.job_runner
    assert runner is not None
    # The trainer's shape (cpu2: YUN_JOBS__THREADS) costs the operator $0.72 an hour, 200,000 nanodollars a second.
    shape = runner._resources().shape
    await asyncio.to_thread(yun.services.billing.set_compute_price, shape, "0.72", "1.44")
    before = await economics(yun)
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)

        async def checkpointed() -> bool | None:
            return True if [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)] else None

        await until(checkpointed, "the first epoch's checkpoint")
        status = await runner.cluster.task(job.id)
        assert status is not None and status.running
        os.kill(runner.cluster._running[job.id].pid, signal.SIGKILL)  # type: ignore[attr-defined]
        done = await finished(client, job.id)
        events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert done.status == "succeeded" and done.trained_tokens == 12 * 3 * TOKENS_PER_EXAMPLE
    assert any("resumes from its last checkpoint" in m for m in events)
    assert any(m.startswith("Resumed from the checkpoint of epoch") for m in events)
    records = await training_records(yun, key)
    assert len(records) == 1 and records[0]["training_tokens"] == 360
    # Its compute: two runs (the killed one, to its last write, and the resumed one), each recorded once,
    # priced at the trainer's shape, as the operator's cost under the base model, beside its token revenue.
    pieces = await asyncio.to_thread(yun.services.billing.compute.training, job.id)
    assert {p.run for p in pieces} == {1, 2} and all(p.shape == shape for p in pieces)
    assert all(p.cost == p.seconds * 200_000 for p in pieces)
    seconds = sum(p.seconds for p in pieces)
    ended = await asyncio.to_thread(yun.services.fine_tuning.jobs.get_any, job.id)
    assert ended.compute_seconds == seconds * float(runner.config.threads) and ended.attempts == 2
    assert ended.finished_at is not None and ended.started_at is not None
    assert seconds <= (ended.finished_at - ended.started_at).total_seconds()
    after = await economics(yun)
    assert after["training_revenue"] - before["training_revenue"] == 360 * 10**6
    assert after["training_seconds"] - before["training_seconds"] == seconds
    assert after["training_cost"] - before["training_cost"] == seconds * 200_000


async def test_another_org_sees_nothing_of_a_job(yun: Harness) -> None:
    _, key = await new_org(yun, "10")
    _, other = await new_org(yun, "10")
    async with client_for(yun, key) as client, client_for(yun, other) as intruder:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 1})
        for call in (
            intruder.fine_tuning.jobs.retrieve(job.id),
            intruder.fine_tuning.jobs.cancel(job.id),
            intruder.fine_tuning.jobs.list_events(job.id),
            intruder.fine_tuning.jobs.checkpoints.list(job.id),
            intruder.fine_tuning.jobs.create(model=BASE, training_file=f.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [j async for j in intruder.fine_tuning.jobs.list()] == []
        assert (await finished(client, job.id)).status == "succeeded"


async def test_the_fine_tuned_model_is_served_to_its_organization_only(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    _, other = await new_org(yun, "10")
    async with client_for(yun, key) as client, client_for(yun, other) as intruder:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 1})
        done = await finished(client, job.id)
        assert done.status == "succeeded" and done.fine_tuned_model is not None
        model = done.fine_tuned_model
        listed = [m.id async for m in client.models.list()]
        assert model in listed and model not in [m.id async for m in intruder.models.list()]
        assert (await client.models.retrieve(model)).owned_by == org

        async def answered() -> Any:
            try:
                return await client.chat.completions.create(model=model, messages=[MSG], max_tokens=3)
            except openai.NotFoundError:
                return None  # its base's replicas are being replaced by ones that load its adapter

        answer = await until(answered, f"{model} to answer", timeout=120)
        assert answer.model == model and answer.usage is not None and answer.usage.completion_tokens == 3
        # Nobody selects an adapter by hand on a shared replica (they are other organizations' fine-tunes).
        with pytest.raises(openai.BadRequestError) as info:
            await intruder.chat.completions.create(
                model=BASE, messages=[MSG], max_tokens=3, extra_body={"lora": [{"id": 0, "scale": 1.0}]}
            )
        assert info.value.param == "lora"
        for call in (
            intruder.chat.completions.create(model=model, messages=[MSG], max_tokens=3),
            intruder.models.retrieve(model),
            intruder.models.delete(model),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        records = (await org_get(yun, key, "usage/records"))["data"]
        assert [r["model_id"] for r in records if r["endpoint"] == "chat.completions"] == [model]
        deleted = await client.models.delete(model)
        assert deleted.deleted and deleted.id == model
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=model, messages=[MSG], max_tokens=3)


async def test_a_job_no_node_can_hold_waits_in_the_queue_for_compute(
    yun: Harness, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Ray, a run that no node has the CPUs for (the jobs' threads here: 2; each node has 1) is not
    failed: the job goes back to `queued`, says once that it waits for compute, and can be cancelled."""
    from tests.support.raycluster import HEAD_IP
    from yun.cluster.backends.ray import RayBackend

    runner = yun.services.job_runner
    assert runner is not None and runner.config.threads > 1
    ray = RayBackend(ray_cluster.address, node_ip_address=HEAD_IP, task_start_timeout_s=1.0)
    await ray.start()
    monkeypatch.setattr(runner, "cluster", ray)
    try:
        _, key = await new_org(yun, "10")
        async with client_for(yun, key) as client:
            f = await upload(client)
            job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)

            async def waiting() -> list[str] | None:
                events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
                told = [m for m in events if m.startswith("Waiting for compute")]
                return told or None

            (told,) = await until(waiting, "the job says it waits for compute")
            assert "no node of the Ray cluster had cpu2 free" in told
            await asyncio.sleep(3)  # a few more tries meanwhile
            assert len(await waiting() or []) == 1  # told once
            assert (await client.fine_tuning.jobs.retrieve(job.id)).status in ("queued", "running")
            await client.fine_tuning.jobs.cancel(job.id)
            done = await finished(client, job.id)
        assert done.status == "cancelled" and done.trained_tokens == 0
        assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0
        assert await ray.task(job.id) is None  # nothing left waiting for a node
        assert await asyncio.to_thread(yun.services.billing.compute.training, job.id) == []  # no run, no compute
    finally:
        monkeypatch.undo()
        await ray.close()


async def test_a_job_cancelled_while_its_files_are_validated_is_cancelled_and_holds_nothing(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Create returns before the file is read; the read is held back here (as a large file would take its
    time) so the cancel lands during validation."""
    store = yun.services.fine_tuning.files
    real_open = store.open
    gate = asyncio.Event()
    reading = asyncio.Event()

    async def slow_open(key: str) -> AsyncIterator[bytes]:
        chunks = await real_open(key)

        async def held_back() -> AsyncIterator[bytes]:
            reading.set()
            await gate.wait()
            async for chunk in chunks:
                yield chunk

        return held_back()

    monkeypatch.setattr(store, "open", slow_open)
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)
        await asyncio.wait_for(reading.wait(), 30)  # the worker is reading it now
        assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "validating_files"
        cancelled = await client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        gate.set()  # the validation ends after the cancel: it must not queue, hold or charge
        await asyncio.sleep(1.5)
        after = await client.fine_tuning.jobs.retrieve(job.id)
        assert after.status == "cancelled" and after.error is None
    assert await training_records(yun, key) == []
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_a_job_left_validating_by_a_crash_is_validated_again_and_held_once(yun: Harness) -> None:
    """A crash after the validation took its hold and before the job moved on: the job is still in
    validating_files with an open hold. The runner (any runner: it keeps no memory of it) validates it
    again, keeps that hold rather than taking a second, and the job runs and is billed once."""
    from yun.jobs.fine_tuning import states
    from yun.store.fine_tuning import JobRecord

    org, key = await new_org(yun, "10")
    runner = yun.services.job_runner
    assert runner is not None
    async with client_for(yun, key) as client:
        f = await upload(client)
        record = JobRecord(
            id="ftjob-crashedmidvalidation0",
            org_id=org,
            key_id="key-crashed",
            model_id=BASE,
            training_file=f.id,
            seed=1,
            hyperparameters={"n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": "auto"},
            status=states.VALIDATING,
        )
        service = yun.services.fine_tuning
        await asyncio.to_thread(service.jobs.create, record)
        await asyncio.to_thread(service.billing.reserve, record.id, org, "key-crashed", BASE, 12 * TOKENS_PER_EXAMPLE)
        runner.poke()
        done = await finished(client, record.id)
    assert done.status == "succeeded" and done.trained_tokens == 12 * TOKENS_PER_EXAMPLE
    (billed,) = await training_records(yun, key)
    assert billed["training_tokens"] == 12 * TOKENS_PER_EXAMPLE and billed["cost_nanodollars"] == 120 * 10**6
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_a_run_started_again_on_a_fresh_node_resumes_from_the_checkpoint_kept_in_storage(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node a run was on is lost with its working directory (its checkpoints with it): the runner kept
    each checkpoint in the FileStore, so the run started again, in a fresh directory, resumes from it. No
    step runs twice and the job is billed once."""
    import shutil

    monkeypatch.setenv("FAKE_TRAINER_STEP_S", "0.2")
    _, key = await new_org(yun, "10")
    runner = yun.services.job_runner
    assert runner is not None
    async with client_for(yun, key) as client:
        f = await upload(client)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)

        async def kept() -> Any:
            return await runner.checkpoints.newest(job.id)

        stored = await until(kept, "the first epoch's checkpoint kept in the file store")
        assert (stored.epoch, stored.step, stored.files) == (1, 3, ("adapter.gguf",))
        # The node is lost: its trainer and its disk. (No await in between: the runner sees both at once.)
        os.kill(runner.cluster._running[job.id].pid, signal.SIGKILL)  # type: ignore[attr-defined]
        shutil.rmtree(runner._dir(await asyncio.to_thread(yun.services.fine_tuning.jobs.get_any, job.id)))
        done = await finished(client, job.id)
        events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert done.status == "succeeded", done.error
    assert done.trained_tokens == 12 * 3 * TOKENS_PER_EXAMPLE
    assert "Resumed from the checkpoint of epoch 1." in [e.message for e in events]
    steps = [e.data["step"] for e in events if e.type == "metrics" and e.message.startswith("Step ")]  # type: ignore[index]
    # Epoch 1's steps ran once (the new run began at step 4); a step of epoch 2 the lost run had already
    # reported runs again, as it would on any resume from a per-epoch checkpoint.
    assert sorted(set(steps)) == list(range(1, 10)) and [steps.count(n) for n in (1, 2, 3)] == [1, 1, 1]
    (record,) = await training_records(yun, key)
    assert record["training_tokens"] == 360 and record["cost_nanodollars"] == 360 * 10**6

    async def forgotten() -> bool | None:
        return True if await runner.checkpoints.newest(job.id) is None else None

    await until(forgotten, "what the job kept deleted once it ended", timeout=10)
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0


async def test_on_ray_a_run_whose_node_is_lost_resumes_elsewhere_from_the_kept_checkpoint(
    yun: Harness, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real two-node Ray cluster: after its first checkpoint, the run's actor is killed and its
    node's working directory removed (the node is gone, with its disk). The run started again, on any node,
    gets the checkpoint the runner copied back through Ray into the file store, and resumes from it."""
    import shutil
    from dataclasses import replace

    from tests.support.raycluster import HEAD_IP
    from yun.cluster.backends.ray import NAMESPACE, TASK_PREFIX, RayBackend

    runner = yun.services.job_runner
    assert runner is not None
    ray = RayBackend(ray_cluster.address, node_ip_address=HEAD_IP)
    await ray.start()
    # One CPU (a whole node here) and slow steps (the spec reaches the node; the environment does not).
    monkeypatch.setattr(runner, "config", replace(runner.config, threads=1, options=(("fake_step_s", 1.0),)))
    monkeypatch.setattr(runner, "cluster", ray)
    try:
        _, key = await new_org(yun, "10")
        async with client_for(yun, key) as client:
            f = await upload(client)
            job = await client.fine_tuning.jobs.create(model=BASE, training_file=f.id)

            async def kept() -> Any:
                return await runner.checkpoints.newest(job.id)

            assert (await until(kept, "the first checkpoint kept", timeout=120)).epoch == 1
            workdirs = list(Path(ray_cluster.root).glob(f"**/yun-tasks/{job.id}"))
            assert len(workdirs) == 1  # the node's own copy of its checkpoints...
            shutil.rmtree(workdirs[0])  # ...gone with the node, and its trainer with it:
            name = TASK_PREFIX + job.id
            assert name in await asyncio.to_thread(ray_cluster.named_actors, NAMESPACE, kill_prefix=name)
            done = await finished(client, job.id)
            events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
            assert done.status == "succeeded", done.error
            await served(client, done.fine_tuned_model)  # the base's roll is over before the module's teardown
        assert done.trained_tokens == 12 * 3 * TOKENS_PER_EXAMPLE
        assert "Resumed from the checkpoint of epoch 1." in events
        (record,) = await training_records(yun, key)
        assert record["training_tokens"] == 360 and record["cost_nanodollars"] == 360 * 10**6
        assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0
    finally:
        monkeypatch.undo()
        await ray.close()
