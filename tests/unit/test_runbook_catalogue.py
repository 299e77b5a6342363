"""The catalogue's contract: definitions as validated data, registered and checked step functions,
plan validation and hashing, and the execute / verify / rollback flow, against the in-memory fake."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from connectors.kubernetes import InMemoryCluster
from runbooks import (
    Catalogue,
    Diff,
    IncompleteRunbook,
    InvalidPlan,
    InvalidTarget,
    Plan,
    ReplicaBounds,
    Risk,
    Runbook,
    RunbookContext,
    RunbookDefinition,
    RunbookSettings,
    StepResult,
    StepSignatureError,
    Target,
    TargetKind,
    UnknownRunbook,
    default_catalogue,
)
from runbooks.definition import StepKind
from runbooks.errors import RunbookError

REQUIRED = {
    "cordon_node",
    "uncordon_node",
    "drain_node",
    "reset_gpu",
    "fence_gpu",
    "reboot_node",
    "reschedule_pods",
    "restart_pod",
    "scale_deployment",
    "taint_node",
    "untaint_node",
    "taint_port",
    "open_hardware_ticket",
    "notify_only",
}


class Params(BaseModel):
    n: int = 1


class Other(BaseModel):
    pass


def definition(**overrides: Any) -> RunbookDefinition:
    fields: dict[str, Any] = {
        "name": "probe",
        "title": "Probe",
        "description": "a test runbook",
        "risk": Risk.LOW,
        "target_kind": TargetKind.NODE,
        "params_model": Params,
        "disruptive": False,
        "auto_approvable": True,
        "expected_effect": "nothing",
        "verify_deadline_s": 10,
        "has_rollback": False,
    }
    return RunbookDefinition(**(fields | overrides))


def complete(runbook: Runbook[Params], calls: list[str]) -> Runbook[Params]:
    """Register the parts every runbook needs; each step records its call."""

    @runbook.precondition
    def pre(plan: Plan, params: Params, ctx: RunbookContext) -> list[str]:
        return []

    @runbook.dry_run
    def dry(plan: Plan, params: Params, ctx: RunbookContext) -> Diff:
        return Diff(changes=["probe"])

    @runbook.verify
    def verify(plan: Plan, params: Params, ctx: RunbookContext) -> StepResult:
        calls.append("verify")
        return StepResult(len(calls) >= 5, f"check {len(calls)}")

    return runbook


@pytest.fixture
def fake() -> InMemoryCluster:
    cluster = InMemoryCluster()
    cluster.add_node("gpu-node-001")
    return cluster


@pytest.fixture
def ctx(fake: InMemoryCluster) -> RunbookContext:
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return RunbookContext(cluster=fake, clock=lambda: now[0], sleep=sleep)


# ------------------------------------------------------------------ the default catalogue


def test_default_catalogue_has_every_required_runbook() -> None:
    assert set(default_catalogue().names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_runbook_has_schema_verify_and_declared_rollback(name: str) -> None:
    catalogue = default_catalogue()
    runbook = catalogue.runbook(name)
    schema = runbook.definition.tool_schema()
    assert schema["type"] == "object" and "properties" in schema
    assert runbook.part(StepKind.VERIFY) is not None
    assert runbook.part(StepKind.DRY_RUN) is not None and runbook.part(StepKind.PRECONDITION) is not None
    assert runbook.steps
    assert (runbook.part(StepKind.ROLLBACK) is not None) == runbook.definition.has_rollback
    assert runbook.definition.verify_deadline_s > 0
    if runbook.definition.auto_approvable:
        assert runbook.definition.risk is Risk.LOW


def test_each_catalogue_is_fresh() -> None:
    assert default_catalogue() is not default_catalogue()
    assert default_catalogue(RunbookSettings(drain_timeout_s=5)).settings.drain_timeout_s == 5


def test_unknown_runbook_is_a_gpuops_error() -> None:
    from gpuops.errors import GpuopsError

    with pytest.raises(UnknownRunbook, match="no runbook named 'format_disk'") as err:
        default_catalogue().get("format_disk")
    assert isinstance(err.value, GpuopsError) and isinstance(err.value, RunbookError)


# ------------------------------------------------------------------ registration


def test_registration_refuses_wrong_signatures() -> None:
    runbook = Runbook[Params](definition())

    def two_args(plan: Plan, params: Params) -> StepResult:
        return StepResult(True, "")

    def wrong_params(plan: Plan, params: dict[str, Any], ctx: RunbookContext) -> StepResult:
        return StepResult(True, "")

    def wrong_return(plan: Plan, params: Params, ctx: RunbookContext) -> bool:
        return True

    def unannotated(plan, params, ctx):  # type: ignore[no-untyped-def]
        return StepResult(True, "")

    def keyword_only(plan: Plan, params: Params, *, ctx: RunbookContext) -> StepResult:
        return StepResult(True, "")

    def other_model(plan: Plan, params: Other, ctx: RunbookContext) -> StepResult:
        return StepResult(True, "")

    for fn, message in (
        (two_args, "exactly three positional"),
        (wrong_params, "expected Params"),
        (wrong_return, "must return"),
        (unannotated, "needs a type annotation"),
        (keyword_only, "exactly three positional"),
        (other_model, "expected Params"),
    ):
        with pytest.raises(StepSignatureError, match=message):
            runbook.step(fn)
    with pytest.raises(StepSignatureError, match="must return"):
        runbook.dry_run(wrong_return)  # a dry run returns a Diff
    assert runbook.steps == ()


def test_registration_accepts_a_typed_step_and_refuses_duplicates() -> None:
    runbook = Runbook[Params](definition())

    def act(plan: Plan, params: Params, ctx: RunbookContext) -> StepResult:
        return StepResult(True, "")

    runbook.step(act)
    assert [s.name for s in runbook.steps] == ["act"]
    with pytest.raises(StepSignatureError, match="already registered"):
        runbook.step(act)


def test_catalogue_refuses_incomplete_runbooks() -> None:
    bare = Runbook[Params](definition())
    with pytest.raises(IncompleteRunbook, match="has no precondition, dry_run, verify, step"):
        Catalogue([bare])
    promised = complete(Runbook[Params](definition(has_rollback=True)), [])

    @promised.step
    def act(plan: Plan, params: Params, ctx: RunbookContext) -> StepResult:
        return StepResult(True, "")

    with pytest.raises(IncompleteRunbook, match="has_rollback=True"):
        Catalogue([promised])


def test_definition_is_validated() -> None:
    with pytest.raises(ValidationError, match="only a low-risk runbook may be auto-approvable"):
        definition(risk=Risk.HIGH, auto_approvable=True)
    with pytest.raises(ValidationError, match="name"):
        definition(name="Drain Node")
    with pytest.raises(ValidationError, match="verify_deadline_s"):
        definition(verify_deadline_s=0)
    with pytest.raises(ValidationError, match="max_targets"):
        definition(target_kind=TargetKind.NONE)


# ------------------------------------------------------------------ targets and plans


@pytest.mark.parametrize(
    "target",
    [
        Target.for_node("gpu-node-003"),
        Target.for_gpu("gpu-node-003", 5),
        Target.for_pod("training", "job-a-worker-3"),
        Target.for_deployment("serve", "llm"),
        Target(TargetKind.NONE),
    ],
)
def test_target_keys_round_trip(target: Target) -> None:
    assert Target.parse(target.key()) == target


def test_target_keys_are_stable() -> None:
    assert Target.for_gpu("gpu-node-003", 5).key() == "gpu/gpu-node-003/5"
    assert Target.for_pod("ns", "p").key() == "pod/ns/p"


@pytest.mark.parametrize("key", ["", "node", "node/a/b", "gpu/n/x", "gpu/n/-1", "rack/r1", "pod/ns", 7])
def test_bad_target_keys_are_refused(key: Any) -> None:
    with pytest.raises(InvalidTarget):
        Target.parse(key)


def test_targets_check_their_fields() -> None:
    with pytest.raises(InvalidTarget, match="needs gpu"):
        Target(TargetKind.GPU, node="n")
    with pytest.raises(InvalidTarget, match="takes no gpu"):
        Target(TargetKind.NODE, node="n", gpu=1)
    with pytest.raises(InvalidTarget, match="must not contain"):
        Target.for_node("a/b")


def test_plan_hash_follows_params_and_targets_but_not_target_order() -> None:
    a, b = Target.for_node("gpu-node-001"), Target.for_node("gpu-node-002")
    base = Plan("drain_node", {"force": False, "reason": "xid"}, (a, b))
    assert base.plan_hash() == Plan("drain_node", {"reason": "xid", "force": False}, (b, a)).plan_hash()
    changed = [
        Plan("drain_node", {"force": True, "reason": "xid"}, (a, b)),
        Plan("drain_node", {"force": False, "reason": "xid79"}, (a, b)),
        Plan("drain_node", {"force": False, "reason": "xid"}, (a,)),
        Plan("drain_node", {"force": False, "reason": "xid"}, (a, Target.for_node("gpu-node-003"))),
        Plan("cordon_node", {"force": False, "reason": "xid"}, (a, b)),
    ]
    hashes = {p.plan_hash() for p in changed}
    assert len(hashes) == len(changed) and base.plan_hash() not in hashes
    assert len(base.plan_hash()) == 64


# ------------------------------------------------------------------ validation


def test_validate_normalises_parameters() -> None:
    plan = default_catalogue().validate(Plan("drain_node", {}, (Target.for_node("gpu-node-001"),)))
    assert plan.params["force"] is False and plan.params["checkpoint"] is True
    assert plan.targets == (Target.for_node("gpu-node-001"),)


def test_validate_refuses_bad_input() -> None:
    catalogue = default_catalogue()
    node = (Target.for_node("gpu-node-001"),)
    with pytest.raises(UnknownRunbook):
        catalogue.validate(Plan("rm_rf", {}, node))
    with pytest.raises(InvalidPlan, match=r"(?s)invalid parameters.*force"):
        catalogue.validate(Plan("drain_node", {"force": "maybe"}, node))
    with pytest.raises(InvalidPlan, match=r"(?s)invalid parameters.*Extra inputs"):
        catalogue.validate(Plan("drain_node", {"selfdestruct": True}, node))
    with pytest.raises(InvalidPlan, match="acts on gpu targets"):
        catalogue.validate(Plan("reset_gpu", {}, node))
    with pytest.raises(InvalidPlan, match="takes one node target"):
        catalogue.validate(Plan("drain_node", {}, ()))
    with pytest.raises(InvalidPlan, match="takes one node target"):
        catalogue.validate(Plan("drain_node", {}, (*node, Target.for_node("gpu-node-002"))))
    with pytest.raises(InvalidPlan, match="takes no targets"):
        catalogue.validate(Plan("notify_only", {"message": "hi"}, node))
    with pytest.raises(InvalidPlan, match="params must be an object"):
        catalogue.validate(Plan("notify_only", ["hi"], ()))  # type: ignore[arg-type]
    with pytest.raises(InvalidPlan, match="key"):
        catalogue.validate(Plan("taint_node", {"key": "node.kubernetes.io/unschedulable"}, node))


def test_scale_bounds_are_checked_in_validation() -> None:
    settings = RunbookSettings(
        default_replica_bounds=ReplicaBounds(min_replicas=1, max_replicas=4),
        replica_bounds={"serve/llm": ReplicaBounds(min_replicas=2, max_replicas=12)},
    )
    catalogue = default_catalogue(settings)
    llm, other = (Target.for_deployment("serve", "llm"),), (Target.for_deployment("serve", "other"),)
    assert catalogue.validate(Plan("scale_deployment", {"replicas": 12}, llm)).params["replicas"] == 12
    with pytest.raises(InvalidPlan, match=r"outside the bounds for serve/llm \(2\.\.12\)"):
        catalogue.validate(Plan("scale_deployment", {"replicas": 13}, llm))
    with pytest.raises(InvalidPlan, match=r"outside the bounds"):
        catalogue.validate(Plan("scale_deployment", {"replicas": 1}, llm))
    with pytest.raises(InvalidPlan, match=r"\(1\.\.4\)"):
        catalogue.validate(Plan("scale_deployment", {"replicas": 5}, other))
    with pytest.raises(InvalidPlan, match="greater than or equal to 0"):
        catalogue.validate(Plan("scale_deployment", {"replicas": -1}, other))


def test_a_scale_down_names_busy_pods_with_a_count_of_requests() -> None:
    catalogue = default_catalogue(RunbookSettings(default_replica_bounds=ReplicaBounds(min_replicas=0,
                                                                                       max_replicas=4)))
    llm = (Target.for_deployment("serve", "llm"),)
    plan = catalogue.validate(Plan("scale_deployment", {"replicas": 1, "busy_pods": {"llm-abc-1": 2}}, llm))
    assert plan.params["busy_pods"] == {"llm-abc-1": 2}
    for bad in ({"llm-abc-1": 0}, {"": 1}):
        with pytest.raises(InvalidPlan, match=r"busy_pods: .* needs a pod name and a count of requests >= 1"):
            catalogue.validate(Plan("scale_deployment", {"replicas": 1, "busy_pods": bad}, llm))


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="min_replicas 5 exceeds max_replicas 2"):
        ReplicaBounds(min_replicas=5, max_replicas=2)
    with pytest.raises(ValidationError, match="namespace/name"):
        RunbookSettings(replica_bounds={"llm": ReplicaBounds(min_replicas=1, max_replicas=2)})
    with pytest.raises(ValidationError, match="http"):
        RunbookSettings(hardware_ticket_webhook_url="ftp://tickets")
    with pytest.raises(ValidationError, match="drain_timeout_s"):
        RunbookSettings(drain_timeout_s=-1)


# ------------------------------------------------------------------ the flow


def probe_catalogue(calls: list[str], fail_at: str | None = None, verify_deadline_s: float = 10) -> Catalogue:
    runbook = complete(Runbook[Params](definition(verify_deadline_s=verify_deadline_s)), calls)

    def make(name: str) -> Any:
        def step(plan: Plan, params: Params, ctx: RunbookContext) -> StepResult:
            calls.append(name)
            if name == fail_at:
                raise RuntimeError(f"{name} broke")
            return StepResult(True, f"{name} ok", {name: params.n})

        step.__name__ = name
        return step

    for name in ("first", "second", "third"):
        runbook.step(make(name))
    return Catalogue([runbook])


def test_execute_reports_each_step_and_stops_at_the_first_failure(ctx: RunbookContext) -> None:
    seen: list[tuple[str, StepResult]] = []
    ctx.on_step = lambda name, result: seen.append((name, result))
    calls: list[str] = []
    plan = Plan("probe", {"n": 3}, (Target.for_node("gpu-node-001"),))
    result = probe_catalogue(calls, fail_at="second").execute(plan, ctx)
    assert not result.ok and "stopped at second: RuntimeError: second broke" in result.detail
    assert calls == ["first", "second"]
    assert [(n, r.ok) for n, r in seen] == [("preconditions", True), ("first", True), ("second", False)]
    assert result.data["failed_step"] == "second" and result.data["first"] == 3

    calls.clear()
    done = probe_catalogue(calls).execute(plan, ctx)
    assert done.ok and calls == ["first", "second", "third"] and done.data["steps"] == calls


def test_verify_polls_until_the_deadline(ctx: RunbookContext) -> None:
    calls: list[str] = []
    plan = Plan("probe", {}, (Target.for_node("gpu-node-001"),))
    started = ctx.clock()
    assert probe_catalogue(calls).verify(plan, ctx).ok  # ok on the fifth check
    assert calls.count("verify") == 5 and ctx.clock() - started == pytest.approx(8.0)

    calls.clear()
    never = probe_catalogue(calls, verify_deadline_s=3)
    result = never.verify(plan, ctx)
    assert not result.ok and "not met within 3s" in result.detail
    assert calls.count("verify") == 3  # at 0, 2 and at the deadline


def test_rollback_is_none_without_one(ctx: RunbookContext) -> None:
    plan = Plan("notify_only", {"message": "disk at 91%"}, ())
    assert default_catalogue().rollback(plan, ctx) is None


def test_notify_only_records_the_notification(ctx: RunbookContext) -> None:
    catalogue = default_catalogue()
    plan = Plan("notify_only", {"message": "XID 79 on gpu-node-001", "severity": "critical"}, ())
    assert catalogue.dry_run(plan, ctx).changes == ["notify (critical): XID 79 on gpu-node-001"]
    result = catalogue.execute(plan, ctx)
    assert result.ok and result.data["notification"]["message"] == "XID 79 on gpu-node-001"
    assert catalogue.verify(plan, ctx).ok
    with pytest.raises(InvalidPlan, match="message"):
        catalogue.validate(Plan("notify_only", {"message": ""}, ()))


def test_cordon_and_uncordon_with_the_fake(fake: InMemoryCluster, ctx: RunbookContext) -> None:
    catalogue = default_catalogue()
    node = (Target.for_node("gpu-node-001"),)
    cordon, uncordon = Plan("cordon_node", {"reason": "xid"}, node), Plan("uncordon_node", {}, node)
    assert catalogue.risk_for(cordon, ctx) is Risk.LOW
    assert catalogue.preconditions(uncordon, ctx) == ["gpu-node-001 is not cordoned"]
    assert catalogue.execute(cordon, ctx).ok and catalogue.verify(cordon, ctx).ok
    assert fake.get_node("gpu-node-001").cordoned_by_gpuops
    assert catalogue.preconditions(uncordon, ctx) == []
    rolled = catalogue.rollback(cordon, ctx)
    assert rolled is not None and rolled.ok and not fake.get_node("gpu-node-001").unschedulable
    missing = Plan("cordon_node", {}, (Target.for_node("gpu-node-404"),))
    assert catalogue.preconditions(missing, ctx) == ["node gpu-node-404 does not exist"]
    assert not catalogue.execute(missing, ctx).ok


def test_uncordon_refuses_someone_elses_cordon_with_the_fake(fake: InMemoryCluster, ctx: RunbookContext) -> None:
    fake.add_node("gpu-node-002", unschedulable=True)
    plan = Plan("uncordon_node", {}, (Target.for_node("gpu-node-002"),))
    catalogue = default_catalogue()
    assert "cordoned by someone else" in catalogue.preconditions(plan, ctx)[0]
    result = catalogue.execute(plan, ctx)
    assert not result.ok and result.data["failed_step"] == "preconditions"
    assert fake.get_node("gpu-node-002").unschedulable


def test_drain_with_the_fake_retries_blocked_evictions(fake: InMemoryCluster, ctx: RunbookContext) -> None:
    fake.add_pod("ml", "serve-a", "gpu-node-001", gpus=4)
    fake.add_pod("ml", "serve-b", "gpu-node-001", gpus=4)
    fake.add_pod("gpu-operator", "dcgm", "gpu-node-001", owner_kind="DaemonSet")
    fake.block_evictions("ml", "serve-b", times=2)
    catalogue = default_catalogue()
    plan = Plan("drain_node", {}, (Target.for_node("gpu-node-001"),))
    started = ctx.clock()
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    assert result.data["retried"] == ["ml/serve-b"] and result.data["evicted"] == ["ml/serve-a", "ml/serve-b"]
    assert ctx.clock() - started == pytest.approx(2 * catalogue.settings.evict_retry_interval_s)
    assert [p.name for p in fake.list_pods("gpu-node-001")] == ["dcgm"]
    assert catalogue.verify(plan, ctx).ok


def test_drain_with_the_fake_waits_for_the_checkpoint(fake: InMemoryCluster, ctx: RunbookContext) -> None:
    fake.add_pod("ml", "train-0", "gpu-node-001", gpus=8, annotations={"gpuops.io/checkpointable": "true"})
    plan = Plan("drain_node", {}, (Target.for_node("gpu-node-001"),))
    slept = ctx.sleep
    answered: list[float] = []

    def job_answers_after_a_while(seconds: float) -> None:
        slept(seconds)
        if not answered and ctx.clock() >= 1030:
            answered.append(ctx.clock())
            fake.answer_checkpoint("ml", "train-0")

    ctx.sleep = job_answers_after_a_while
    result = default_catalogue().execute(plan, ctx)
    assert result.ok and result.data["checkpointed"] == ["ml/train-0"]
    actions = [a[0] for a in fake.actions]
    assert actions.index("annotate") < actions.index("evict") and answered


def test_targets_normalise_and_check_their_kind() -> None:
    assert Target("node", node="n").kind is TargetKind.NODE  # type: ignore[arg-type]
    with pytest.raises(InvalidTarget, match="target kind 'rack'"):
        Target("rack", node="n")  # type: ignore[arg-type]


def test_definitions_serialise_with_their_parameter_schema() -> None:
    for definition_ in default_catalogue().definitions():
        dumped = definition_.model_dump(mode="json")
        assert dumped["params_model"] == definition_.params_model.model_json_schema()
        assert dumped["risk"] in {"low", "medium", "high"}


def test_waits_end_even_when_the_clock_stands_still(fake: InMemoryCluster) -> None:
    ctx = RunbookContext(cluster=fake, clock=lambda: 0.0, sleep=lambda s: None)
    checks: list[int] = []
    assert ctx.poll(10, lambda: checks.append(1)) is None
    assert len(checks) == 7  # ceil(10 / 2) + 2


def test_the_readme_lists_every_runbook() -> None:
    from pathlib import Path

    import runbooks

    readme = (Path(runbooks.__file__).parent / "README.md").read_text()
    for name in default_catalogue().names():
        assert f"| `{name}` |" in readme
