"""The worker pool: persistent Ray Train worker groups that run a sweep's trials one after another.

    used by `python -m raycf.sweep` (sweep.worker_pool: true, the default) and raycf.trial.run(workers=...)

Why: a TorchTrainer per trial starts a Train controller and seven more processes (workers, placement-group
cleaner, synchronisation, dataset and preemption actors), each importing Ray Train and torch, and its workers
then import transformers and PEFT: 12-16 s of start-up and ~4 s of imports per trial on 2 CPUs (measured with
RAYCF_TIMELINE), against ~20 s of training in a tiny trial. So the sweep starts one TorchTrainer per trial slot
(`fits` of them, as many trials as the cluster runs at once) as it starts, beside Tune. Its workers keep their
processes, process group and imports, and take job after job from the board, an actor: a Tune trial posts its
job there and relays each stage's result to Tune; the pool's workers train, probe, checkpoint into the stage
cache and log to MLflow exactly as a trial's own TorchTrainer does (raycf.trial.stages.run_stages). Tune's state holds
the board's name, not its handle: a resumed sweep finds the new pool's board.

Faults: a worker that dies makes Ray Train restart the slot's worker group; the new group takes the unfinished
job again and goes on after its last finished stage (the stage cache), up to resources.max_failures restarts
per job, after which the job fails and its Tune trial sees the error. A job whose trial Tune stopped (ASHA),
retried (its driver died) or lost (no word from it for LEASE_S) is cancelled: its workers stop at the next
optimizer step and take the next job.
"""
from __future__ import annotations

import asyncio
import gc
import time
import traceback
import uuid
from dataclasses import replace

from raycf.errors import ConfigError
from raycf.timeline import mark
from raycf.trial.collective import agree, barrier
from raycf.trial.launch import pool_shape, torch_trainer
from raycf.trial.record import WORK_KEYS

LEASE_S = 60.0        # a job whose Tune trial has not asked for results this long is cancelled
POLL_S = 0.5          # how often rank 0 asks the board whether its job was cancelled
IDLE_S = 30.0         # an idle worker group comes back from take() this often (keeps its collectives alive)


class Cancelled(Exception):
    """The job's trial was stopped (by the scheduler, a retry or a lost driver); every rank raises it at the same
    optimizer step, so no rank is left waiting in a collective."""


class Board:
    """Jobs waiting, the job each slot is running, and the results on their way to the Tune trials.
    A Ray async actor: take() and get() wait without blocking the other calls."""

    def __init__(self, slots: int):
        self.slots = slots
        self.queue: list[dict] = []         # jobs not started, first come first served
        self.current: dict[int, dict] = {}  # slot -> the job its workers are running
        self.restarts: dict[str, int] = {}  # job id -> worker-group restarts inside it
        self.errors: dict[str, str] = {}    # job id -> the last error its workers raised
        self.results: dict[str, list] = {}  # job id -> items not yet fetched by its trial
        self.asked: dict[str, float] = {}   # job id -> when its trial last asked (lease)
        self.stopped: set[str] = set()
        self.reported: dict[str, int] = {}  # trial id -> last stage whose result reached the board
        self.work: dict[str, dict] = {}     # trial id -> its work counts (WORK_KEYS) in that result
        self.ready: set[int] = set()
        self.released: dict[str, int] = {}  # job id -> the last stage boundary its trial may go past (gated jobs)
        self.ready_at: float | None = None  # epoch seconds when every slot had asked for its first job
        self.dead: dict[int, str] = {}      # slot -> why its worker group is gone for good
        self.closed = False
        self.changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _wait(self, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _post(self, job_id: str, item: dict) -> None:
        self.results.setdefault(job_id, []).append(item)

    # ------------------------------------------------------------------ the Tune trial's side
    async def submit(self, job: dict) -> str:
        """Queue `job` (keys: trial, config, plan, max_failures, prepare_only); an earlier job of the same
        trial (the attempt before a retry) is cancelled first. Returns the job id."""
        await self.cancel(job["trial"])
        job = {**job, "id": uuid.uuid4().hex[:12]}
        self.asked[job["id"]] = time.monotonic()
        self.queue.append(job)
        if len(self.dead) == self.slots:
            self._post(job["id"], {"error": "every worker group of the pool is gone: " +
                                   "; ".join(self.dead.values())})
        await self._notify()
        return job["id"]

    async def get(self, job_id: str, timeout: float = 1.0) -> list[dict]:
        """The job's results since the last call (waits up to `timeout` for one); renews the job's lease."""
        self.asked[job_id] = time.monotonic()
        deadline = time.monotonic() + timeout
        while not self.results.get(job_id) and time.monotonic() < deadline:
            await self._wait(deadline - time.monotonic())
        self.asked[job_id] = time.monotonic()
        return self.results.pop(job_id, [])

    async def cancel(self, trial: str) -> None:
        """Stop every job of `trial`: queued ones are dropped, running ones stop at their next step."""
        for job in [j for j in self.queue if j["trial"] == trial]:
            self.queue.remove(job)
            self._post(job["id"], {"cancelled": True})
        for job in self.current.values():
            if job["trial"] == trial:
                self.stopped.add(job["id"])
        await self._notify()

    async def release(self, job_id: str, k: int) -> None:
        """A gated job may go on past stage k (its trial's scheduler decided to continue it)."""
        self.released[job_id] = max(k, self.released.get(job_id, -1))
        await self._notify()

    # ------------------------------------------------------------------ the workers' side (rank 0)
    async def take(self, slot: int, timeout: float = IDLE_S) -> dict | None:
        """The next job for `slot`: the one it was running when its worker group restarted (if restarts are
        left), else the first queued job whose trial no other slot is running. {"idle": True} after
        `timeout`; None once the pool is closed."""
        self.ready.add(slot)
        if self.ready_at is None and len(self.ready) == self.slots:
            self.ready_at = time.time()
            mark("sweep_pool_ready")
        job = self.current.get(slot)
        if job is not None:
            n = self.restarts[job["id"]] = self.restarts.get(job["id"], 0) + 1
            if job["id"] not in self.stopped and n <= job["max_failures"]:
                return job
            why = self.errors.get(job["id"], "its worker died")
            self._post(job["id"], {"cancelled": True} if job["id"] in self.stopped else
                       {"error": f"the trial's workers failed {n} time{'s' * (n != 1)} (resources.max_failures="
                                 f"{job['max_failures']}); last: {why}"})
            del self.current[slot]
        deadline = time.monotonic() + timeout
        while True:
            if self.closed:
                return None
            busy = {j["trial"] for s, j in self.current.items() if s != slot}
            for job in self.queue:
                if job["trial"] not in busy:
                    self.queue.remove(job)
                    self.current[slot] = job
                    return job
            if time.monotonic() >= deadline:
                return {"idle": True}
            await self._wait(deadline - time.monotonic())

    async def put(self, job_id: str, item: dict) -> None:
        if "stage" in item:
            trial = next((j["trial"] for j in self.current.values() if j["id"] == job_id), None)
            if trial is not None and item["stage"] >= self.reported.get(trial, -1):
                self.reported[trial] = item["stage"]
                self.work[trial] = {k: v for k, v in item["metrics"].items() if k in WORK_KEYS}
        self._post(job_id, item)
        await self._notify()

    async def finish(self, slot: int, job_id: str, item: dict) -> None:
        """The job ended on its workers: `item` is done / cancelled / error for its trial."""
        if self.current.get(slot, {}).get("id") == job_id:
            del self.current[slot]
        self._post(job_id, item)
        await self._notify()

    def failed(self, job_id: str, error: str) -> None:
        """A worker raised inside the job; Ray Train restarts the worker group, which takes it again."""
        self.errors[job_id] = error

    async def gate(self, job_id: str, k: int, timeout: float = 1.0) -> str:
        """Whether a gated job, at the boundary after stage k, may go on: "go", "stop" (cancelled or lost), or
        "wait" after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if self.released.get(job_id, -1) >= k:
                return "go"
            if self.stop_requested(job_id) or self.closed:
                return "stop"
            if time.monotonic() >= deadline:
                return "wait"
            await self._wait(deadline - time.monotonic())

    def stop_requested(self, job_id: str) -> bool:
        lost = time.monotonic() - self.asked.get(job_id, time.monotonic()) > LEASE_S
        return job_id in self.stopped or lost

    def reported_stage(self, trial: str) -> tuple[int, dict]:
        """The last stage of `trial` whose result came through the board (-1: none) and its work counts."""
        return self.reported.get(trial, -1), self.work.get(trial, {})

    # ------------------------------------------------------------------ the sweep driver's side
    def ready_time(self) -> float | None:
        return self.ready_at

    async def slot_gone(self, slot: int, error: str) -> None:
        """The slot's TorchTrainer ended with an error (its restarts used up): its job fails, and when no slot
        is left every queued job fails with the reason."""
        self.dead[slot] = error
        job = self.current.pop(slot, None)
        if job is not None:
            self._post(job["id"], {"error": f"the worker group died: {error}"})
        if len(self.dead) == self.slots:
            for job in self.queue:
                self._post(job["id"], {"error": f"every worker group of the pool is gone: {error}"})
            self.queue.clear()
        await self._notify()

    async def close(self) -> None:
        self.closed = True
        await self._notify()


# ----------------------------------------------------------------------------- Ray Train workers

def serve(args: dict) -> None:
    """Ray Train worker entry point of one pool slot: take jobs from the board and run them until it closes."""
    import ray
    import ray.train
    board, slot = args["board"], args["slot"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mark("pool_worker_start")
    import peft  # noqa: F401 - imported once here, not inside the first trial
    import transformers  # noqa: F401
    if rank == 0:
        import mlflow  # noqa: F401
    mark("pool_worker_imported")
    while True:
        job = agree(ray.get(board.take.remote(slot)) if rank == 0 else None)
        if job is None:
            break
        if not job.get("idle"):
            run_job(job, board, slot, rank, world)
        gc.collect()
    barrier()


def run_job(job: dict, board, slot: int, rank: int, world: int) -> None:
    """One trial (or one shared prepare job) on this worker group; results go to the board (rank 0)."""
    import ray
    from raycf.trial.stages import run_stages  # the Train workers' code: torch, transformers, PEFT
    cfg, plan = job["config"], job["plan"]
    # an earlier attempt of this trial (its driver died, or this worker group restarted inside it) may have
    # reported more than the MLflow run showed when the job was posted: it ended before this job was handed out
    before, work = agree(ray.get(board.reported_stage.remote(job["trial"])) if rank == 0 else None)
    if before > plan.logged:
        plan = replace(plan, logged=before, work=work)
    reported = plan.logged
    stop = StopCheck(board, job["id"], rank, world)

    def report(k: int, metrics: dict, checkpoint: bool) -> None:
        if rank == 0:
            item = {"stage": k, "metrics": metrics}
            if checkpoint:
                item["checkpoint"] = plan.stage_entry(k).location
            ray.get(board.put.remote(job["id"], item))
            if job.get("gated") and checkpoint and k < len(cfg.stages):
                wait_at_gate(board, job["id"], k, stop)
    try:
        run_stages(cfg, plan, rank, world, report, reported=reported, prepare_only=bool(job.get("prepare_only")),
                   stop=stop)
        end = {"done": True}
    except Cancelled:
        end = {"cancelled": True}
    except BaseException:
        if rank == 0:  # Ray Train restarts the worker group, whose take() gets this job again
            ray.get(board.failed.remote(job["id"], traceback.format_exc(limit=8)))
        raise
    barrier()
    if rank == 0:
        ray.get(board.finish.remote(slot, job["id"], end))


def wait_at_gate(board, job_id: str, k: int, stop) -> None:
    """Rank 0 of a gated job (PBT): wait after stage k until the trial may go on; if it may not, the next stop
    check stops every rank (the others wait for rank 0 in that check's broadcast)."""
    import ray
    while (answer := ray.get(board.gate.remote(job_id, k))) == "wait":
        pass
    if answer == "stop":
        stop.stop = True


class StopCheck:
    """Called before each stage and optimizer step: raises Cancelled on every rank at the same step once the
    board says the job is stopped (rank 0 asks at most every POLL_S and broadcasts the answer)."""

    def __init__(self, board, job_id: str, rank: int, world: int):
        self.board, self.job_id, self.rank, self.world = board, job_id, rank, world
        self.asked, self.stop = 0.0, False

    def __call__(self) -> None:
        import ray
        import torch
        import torch.distributed as dist
        if self.rank == 0 and time.monotonic() - self.asked >= POLL_S:
            self.stop = self.stop or ray.get(self.board.stop_requested.remote(self.job_id))
            self.asked = time.monotonic()
        flag = self.stop
        if self.world > 1 and dist.is_initialized():
            t = torch.tensor([int(flag)])
            dist.broadcast(t, src=0)
            flag = bool(t.item())
        if flag:
            raise Cancelled(self.job_id)


# ----------------------------------------------------------------------------- the sweep driver

NAMESPACE = "raycf"


def find_board(name: str):
    """The board actor of the running sweep whose pool is called `name`."""
    import ray
    return ray.get_actor(name, namespace=NAMESPACE)


class Pool:
    """The board and one TorchTrainer per slot, started by the sweep driver; close() ends them."""

    def __init__(self, cfg, slots: int, root: str, name: str):
        import ray
        self.slots, self.name, self.shape = slots, f"raycf-board-{name}", pool_shape(cfg)
        try:
            self.board = ray.remote(Board).options(num_cpus=0, max_concurrency=1000, name=self.name,
                                                   namespace=NAMESPACE).remote(slots)
        except ValueError:  # the name is taken
            raise ConfigError([f"name: a sweep named {name!r} is already running on this Ray cluster; wait for it "
                               f"or give a new name with --set name=..."]) from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runner = ray.remote(num_cpus=0)(run_slot)
        self.runners = [runner.remote(cfg, self.board, s, root, f"{name}-pool{s}-{stamp}")
                        for s in range(slots)]

    def holds(self, cfg) -> bool:
        """Whether trials of `cfg` fit this pool's worker groups."""
        return pool_shape(cfg) == self.shape

    def ready_at(self) -> float | None:
        """Epoch seconds when every slot's workers were up (start-up and imports done), None if never."""
        import ray
        return ray.get(self.board.ready_time.remote())

    def close(self, timeout_s: float = 60.0) -> None:
        import ray
        ray.get(self.board.close.remote())
        ray.wait(self.runners, num_returns=len(self.runners), timeout=timeout_s)


def results(board, job_id: str):
    """The job's stage results as they come (dicts with stage, metrics, checkpoint); returns when the job is
    done or cancelled, raises RuntimeError with the workers' error if it failed."""
    import ray
    while True:
        for item in ray.get(board.get.remote(job_id)):
            if "metrics" in item:
                yield item
            elif "error" in item:
                raise RuntimeError(f"trial failed in the worker pool: {item['error']}")
            else:
                return


def run_slot(cfg, board, slot: int, root: str, name: str) -> None:
    """A Ray task: one slot's TorchTrainer, until the board closes; an error that ends it goes to the board."""
    import ray
    mark("pool_slot_start")
    try:
        torch_trainer(cfg, serve, {"board": board, "slot": slot}, name, root,
                            max_failures=-1).fit()
    except Exception as e:  # noqa: BLE001 - told to the trials waiting on this slot
        ray.get(board.slot_gone.remote(slot, f"{type(e).__name__}: {e}"[:2000]))
        raise


def job(cfg, plan, trial: str, prepare_only: bool = False, gated: bool = False) -> dict:
    """What the board hands a slot: the trial's config and plan, and how many worker-group restarts it may cost.
    gated: the job waits at each stage boundary until its trial releases it (Board.release)."""
    return {"trial": trial, "config": cfg, "plan": plan, "prepare_only": prepare_only,
            "max_failures": cfg.resources.max_failures, "gated": gated}
