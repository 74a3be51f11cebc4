"""raycf.pool.Board, the worker pool's job board, as plain asyncio (the Ray actor runs the same methods);
the pool on real Ray Train is in tests/test_sweep.py."""
import asyncio

from raycf.trial import pool


def job(trial: str, max_failures: int = 2) -> dict:
    return {"trial": trial, "config": {}, "plan": {}, "prepare_only": False, "max_failures": max_failures}


def run(coro):
    return asyncio.run(coro)


def test_jobs_go_first_come_first_served_and_results_reach_their_trial():
    async def go():
        b = pool.Board(slots=1)
        a, c = await b.submit(job("a")), await b.submit(job("c"))
        got = await b.take(0)
        assert got["id"] == a
        await b.put(a, {"stage": 1, "metrics": {"stage": 1, "work/stage_trainings": 1}})
        await b.finish(0, a, {"done": True})
        assert [list(i) for i in await b.get(a, timeout=0)] == [["stage", "metrics"], ["done"]]
        assert b.reported_stage("a") == (1, {"work/stage_trainings": 1})
        assert (await b.take(0))["id"] == c
    run(go())


def test_a_retried_trial_supersedes_its_old_job_and_waits_until_it_has_stopped():
    async def go():
        b = pool.Board(slots=2)
        old = await b.submit(job("t"))
        assert (await b.take(0))["id"] == old
        new = await b.submit(job("t"))  # Tune retried the trial: its driver died
        assert b.stop_requested(old) and not b.stop_requested(new)
        assert await b.take(1, timeout=0.05) == {"idle": True}  # not beside the old job of the same trial
        await b.finish(0, old, {"cancelled": True})
        assert (await b.take(1))["id"] == new
        assert await b.get(old, timeout=0) == [{"cancelled": True}]
    run(go())


def test_a_cancelled_job_that_never_started_is_dropped():
    async def go():
        b = pool.Board(slots=1)
        j = await b.submit(job("t"))
        await b.cancel("t")
        assert await b.get(j, timeout=0) == [{"cancelled": True}]
        assert await b.take(0, timeout=0.05) == {"idle": True}
    run(go())


def test_a_restarted_worker_group_takes_its_job_again_until_the_restarts_are_used_up():
    async def go():
        b = pool.Board(slots=1)
        j = await b.submit(job("t", max_failures=2))
        await b.take(0)
        assert (await b.take(0))["id"] == j  # restart 1
        b.failed(j, "RuntimeError: boom")
        assert (await b.take(0))["id"] == j  # restart 2
        nxt = await b.submit(job("u"))
        assert (await b.take(0))["id"] == nxt  # restart 3 > 2: the job fails, the slot goes on
        (err,) = await b.get(j, timeout=0)
        assert err["error"].startswith("the trial's workers failed 3 times (resources.max_failures=2)")
        assert err["error"].endswith("last: RuntimeError: boom")
    run(go())


def test_a_job_whose_trial_stopped_asking_is_cancelled(monkeypatch):
    async def go():
        b = pool.Board(slots=1)
        j = await b.submit(job("t"))
        await b.take(0)
        assert not b.stop_requested(j)
        monkeypatch.setattr(pool, "LEASE_S", -1.0)  # as if LEASE_S had passed since its last get()
        assert b.stop_requested(j)
    run(go())


def test_when_every_slot_is_gone_waiting_and_new_jobs_fail_with_the_reason():
    async def go():
        b = pool.Board(slots=2)
        running, waiting = await b.submit(job("a")), await b.submit(job("b"))
        await b.take(0)
        await b.slot_gone(0, "ControllerError: no GPUs")
        assert (await b.get(running, timeout=0))[0]["error"] == "the worker group died: ControllerError: no GPUs"
        assert await b.get(waiting, timeout=0) == []  # slot 1 may still take it
        await b.slot_gone(1, "ControllerError: no GPUs")
        assert "every worker group of the pool is gone" in (await b.get(waiting, timeout=0))[0]["error"]
        late = await b.submit(job("c"))
        assert "every worker group of the pool is gone" in (await b.get(late, timeout=0))[0]["error"]
    run(go())


def test_a_closed_board_ends_the_workers_loop():
    async def go():
        b = pool.Board(slots=1)
        waiter = asyncio.ensure_future(b.take(0, timeout=30))
        await asyncio.sleep(0.01)
        await b.close()
        assert await asyncio.wait_for(waiter, 1) is None
        assert b.ready_time() is not None  # the slot had asked: the pool was up
    run(go())
