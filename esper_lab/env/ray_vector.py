"""RayVectorEnv: the `VectorEnv` interface with the worlds living in Ray actors (docs/scale-out.md).

The worlds are split into `workers` contiguous groups; each group lives in one Ray actor (`WorldGroup`), a separate
process that may sit on another node. One `step` sends every actor its rows of the action batch at once, so the
actors train their hosts in parallel, then gathers the results in env order:

    driver                                        actor a (envs i..j)
    actions [E, 8] -> rows [j-i+1][8] ints   -->  its worlds step (cfg.engine: one by one, or as one batch)
    reports, rewards [E], flags [E], infos   <--  [(WorldReport, reward, truncated, info)] per world

`reports()` and `masks()` cost no round trip: the driver keeps the last reports, and a `WorldReport` computes its
own legal-action masks (exactly what `World.action_masks()` returns). Everything that crosses the wire is a plain
picklable value (frozen dataclasses, IntEnums, floats, dicts and lists); no tensor is sent either way. World
snapshots (`get_states` / `set_states`, the 'sequential' engine only) travel as bytes, one `World.get_state()` each.

Determinism: a world seeds its own `torch.Generator` from the episode seed and never touches the global RNG, and
each actor runs torch with one thread (as the world itself does while it trains: `WorldConfig.env_threads`), so a
world in an actor produces the same numbers, bit for bit, as the same world in the trainer's process on the same
machine. (Nodes with different CPUs or torch builds may differ in the last bits of a float.)

Failures never hang and never pass silently: every `ray.get` has a deadline (`timeout_s`, default
`$ESPER_LAB_RAY_TIMEOUT` or 300 s); an actor that dies raises `WorldActorDied` naming its envs, its node and pid,
and Ray's account of why it died; a call past the deadline raises `WorldActorTimeout`; an exception inside a world
raises `WorldActorError` with the world's error and remote traceback. The trainer turns any of them into a 'failed'
status.json with the error text, keeping its last checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Sequence

import torch

from esper_lab.config import ConfigError, WorldConfig
from esper_lab.env.groups import GroupedVectorEnv, StepResult, WorldGroup, split_envs  # noqa: F401 - re-exported

INSTALL_HINT = "pip install -e '.[ray]'"
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "ESPER_LAB_RAY_TIMEOUT"
ERROR_CHARS = 2000  # Ray's account of a death can run to pages; status.json gets the first this-many characters


class BackendUnavailable(ConfigError):
    """The requested backend cannot run here (e.g. Ray is not installed)."""


class WorldActorError(RuntimeError):
    """A Ray actor holding some of the worlds failed; the message names the envs, the actor and the cause."""

    def __init__(self, message: str, envs: Sequence[int] = (), actor: int | None = None):
        super().__init__(message)
        self.envs, self.actor = list(envs), actor


class WorldActorDied(WorldActorError):
    """The actor process is gone (killed, crashed, out of memory, its node lost)."""


class WorldActorTimeout(WorldActorError):
    """The actor did not answer within the deadline (could not be placed, or is stuck)."""


def import_ray():
    """`ray`, or `BackendUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend 'ray' needs Ray, which is not installed in this environment ({exc}); "
            f"install the extra with: {INSTALL_HINT}"
        ) from exc
    return ray


def connect(address: str | None, num_cpus: int | None = None, attempts: int = 3) -> bool:
    """Make sure this process is a Ray driver. Returns True when this call started or joined Ray (so `close` should
    shut it down), False when Ray was already initialised (e.g. by a test fixture or a notebook).

    No address: start a local Ray instance with `num_cpus` (default: this machine's cores), no dashboard, worker
    logs not echoed here. On a busy machine Ray's raylet sometimes gives up waiting for its own agent process to
    start ("The current node timed out during startup"); a local start is therefore tried `attempts` times.
    An address ('auto', 'head-host:6379', or 'ray://head-host:10001' with Ray Client installed): join that cluster.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home (also the default in Ray 2.60)
    import logging

    common = dict(log_to_driver=False, logging_level=logging.WARNING, namespace="esper_lab")
    if address is not None:
        try:
            ray.init(address=address, **common)
        except ValueError as exc:  # Ray's check of the address's form ("Invalid address format: ...")
            raise ConfigError(f"ray_address = {address!r}: {exc}") from None
        return True
    for attempt in range(1, attempts + 1):
        try:
            # address="local": always a new instance of our own, never a cluster named by RAY_ADDRESS or a stale
            # /tmp/ray/ray_current_cluster left by an earlier `ray start` on this machine
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **common)
            return True
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for a failed node start
            ray.shutdown()
            if attempt == attempts:
                raise RuntimeError(f"could not start a local Ray instance ({attempts} attempts): {exc}") from exc
            logging.getLogger(__name__).warning("starting a local Ray instance failed (%s); retrying", exc)
    return True


def default_workers(num_envs: int, cpus_per_actor: float, cluster_cpus: float) -> int:
    """One actor per world, as many as the cluster's CPUs hold (at least one)."""
    if cpus_per_actor <= 0:
        return num_envs
    return max(1, min(num_envs, int(math.floor(cluster_cpus / cpus_per_actor + 1e-9))))


class RayVectorEnv(GroupedVectorEnv):
    """`num_envs` worlds in `workers` Ray actors; the interface and the numbers of `VectorEnv`.

    `workers=None` puts one world per actor, as many actors as the cluster's CPUs hold at `cpus_per_actor` each
    (so `demo`'s 4 worlds go 2 per actor on a 2-core machine). Raises `ConfigError` at once when the requested
    actors can never fit the cluster (rather than waiting for resources that will not come).
    """

    def __init__(
        self,
        cfg: WorldConfig,
        num_envs: int,
        seed: int,
        *,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0,
        timeout_s: float | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"RayVectorEnv needs at least one env, got num_envs={num_envs}")
        self.ray = import_ray()
        self.cfg, self.num_envs = cfg, num_envs
        self.timeout_s = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        self._init_streams(seed)
        self.actors: list[Any] = []
        self._owns_ray = connect(address)
        try:
            self._start(workers, cpus_per_actor, gpus_per_actor)
        except BaseException:
            self.close()
            raise

    def _start(self, workers: int | None, cpus: float, gpus: float) -> None:
        resources = self.ray.cluster_resources()
        have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if workers is None:
            workers = default_workers(self.num_envs, cpus, have_cpus)
        if not 1 <= workers <= self.num_envs:
            raise ConfigError(f"workers must be between 1 and num_envs ({self.num_envs}), got {workers}")
        for name, per, have in (("CPU", cpus, have_cpus), ("GPU", gpus, have_gpus)):
            if per * workers > have + 1e-9:
                raise ConfigError(
                    f"backend 'ray': {workers} actors x {per:g} {name} = {per * workers:g} {name}s requested, but the "
                    f"Ray cluster has {have:g}; use fewer workers (--workers) or a smaller "
                    f"ray_{name.lower()}s_per_actor"
                )
        self.groups = split_envs(self.num_envs, workers)
        remote = self.ray.remote(WorldGroup).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1, scheduling_strategy="SPREAD"
        )
        self.actors = [remote.remote(self.cfg, group) for group in self.groups]
        self.where: list[dict[str, Any]] = [{} for _ in self.actors]
        self.where = self._gather([a.ready.remote() for a in self.actors], "start")

    # --- besides the VectorEnv interface (reset / reports / masks / step come from GroupedVectorEnv) -----------

    def echo(self, actions: torch.Tensor) -> list[StepResult]:
        """A step's round trip with no world work (each actor returns its last step's results): Ray's overhead."""
        return self._step_results(actions, "echo")

    def actor_cpu_seconds(self) -> list[float]:
        """CPU seconds each actor process has used so far (benchmarks)."""
        return self._gather([a.cpu_seconds.remote() for a in self.actors], "cpu_seconds")

    def close(self) -> None:
        """Kill the actors; shut Ray down if this env started or joined it. Safe to call twice."""
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already dead, or Ray already down
                pass
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False

    # --- the wire ---------------------------------------------------------------------------------------------

    def _call(self, method: str, args: list[Any]) -> list[Any]:
        if not self.actors:
            raise RuntimeError("RayVectorEnv is closed")
        return self._gather([getattr(a, method).remote(arg) for a, arg in zip(self.actors, args)], method)

    def _gather(self, refs: list[Any], what: str) -> list[Any]:
        """`ray.get` every actor's result in actor (= env) order, all within one deadline; failures named."""
        ray, exc_mod = self.ray, self.ray.exceptions
        deadline = time.monotonic() + self.timeout_s
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0)))
            except exc_mod.GetTimeoutError as exc:
                raise WorldActorTimeout(
                    f"{self._describe(i)} did not answer {what} within {self.timeout_s:g} s "
                    f"(set {TIMEOUT_ENV} to wait longer; cluster resources now: {self._resources()})",
                    self.groups[i], i,
                ) from exc
            except exc_mod.RayActorError as exc:  # ActorDiedError, ActorUnavailableError
                raise WorldActorDied(
                    f"{self._describe(i)} died during {what}: {_short(exc)}", self.groups[i], i
                ) from exc
            except exc_mod.RayTaskError as exc:
                raise WorldActorError(
                    f"{self._describe(i)} failed in {what}: {_short(exc.cause)}\n{_tail(str(exc))}", self.groups[i], i
                ) from exc
            except exc_mod.RayError as exc:  # object lost, owner died, ...
                raise WorldActorDied(
                    f"{self._describe(i)} lost during {what}: {type(exc).__name__}: {_short(exc)}", self.groups[i], i
                ) from exc
        return out

    def _describe(self, i: int) -> str:
        group = self.groups[i]
        envs = f"env {group[0]}" if len(group) == 1 else f"envs {group}"
        where = self.where[i] if i < len(self.where) else {}
        place = f", pid {where['pid']} on {where['node']}" if where else ""
        return f"{envs} (Ray actor {i} of {len(self.groups)}{place})"

    def _resources(self) -> str:
        try:
            return f"available {self.ray.available_resources()} of {self.ray.cluster_resources()}"
        except Exception as exc:  # noqa: BLE001 - only decorating an error message
            return f"unknown ({exc})"


def _short(value: Any) -> str:
    """The first ERROR_CHARS characters (Ray's account of an actor's death starts with the reason)."""
    text = str(value).strip()
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " ..."


def _tail(text: str) -> str:
    """The last ERROR_CHARS characters (a traceback ends with the error)."""
    text = text.strip()
    return text if len(text) <= ERROR_CHARS else "... " + text[-ERROR_CHARS:]
