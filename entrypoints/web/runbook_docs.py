"""A documentation page per runbook (`/runbooks/<name>`) and their index (`/runbooks`): what it does, its
parameters, preconditions, risk, the approvals the policy asks, how it is verified and rolled back. Drawn from
the catalogue's definitions and the policy in force, with the runbook's markdown page for the words only people
need; a plan step links here through `links.runbook_doc_url`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from entrypoints.web.auth import PageUser
from entrypoints.web.links import runbook_doc_url
from entrypoints.web.pages import render
from gpuops.errors import NotFound
from gpuops.policy.config import PolicyConfig
from gpuops.wiring import Container
from runbooks import Catalogue
from runbooks.definition import RunbookDefinition, StepKind
from runbooks.documentation import doc_text
from runbooks.model import Risk

router = APIRouter(include_in_schema=False)
Name = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
_MARKDOWN = MarkdownIt("commonmark", {"html": False})  # the pages are ours, but raw HTML is never passed through


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str
    description: str
    required: bool


@dataclass(frozen=True)
class RunbookDoc:
    """What a runbook's page shows."""

    name: str
    title: str
    description: str
    url: str
    risk: str
    risk_note: str
    approvals: str
    targets: str
    disruptive: bool
    parameters: list[Parameter]
    verification: str
    rollback: str
    has_rollback: bool
    dry_run: str
    steps: list[str]
    body: Markup


def approvals_for(definition: RunbookDefinition, policy: PolicyConfig) -> str:
    """The approvals the policy asks for a plan of this runbook when every budget holds (gpuops.policy.engine)."""
    if definition.risk is Risk.LOW and definition.auto_approvable and definition.name in policy.auto_approve:
        return "none: the policy approves it alone (low risk, listed in auto_approve)"
    if definition.risk is Risk.HIGH:
        return "two different people with the approver role"
    return "one person with the approver role"


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(schema.get("type", "any"))


def parameters_of(definition: RunbookDefinition) -> list[Parameter]:
    schema = definition.params_model.model_json_schema()
    required = set(schema.get("required", []))
    return [Parameter(name=name, type=_type(prop), default="" if "default" not in prop else repr(prop["default"]),
                      description=str(prop.get("description", "")), required=name in required)
            for name, prop in schema.get("properties", {}).items()]


def _doc(fn: Any) -> str:
    return " ".join((getattr(fn, "__doc__", None) or "").split())


def runbook_doc(catalogue: Catalogue, policy: PolicyConfig, name: str) -> RunbookDoc:
    """The page of runbook `name`; NotFound when the catalogue has no such runbook."""
    if name not in catalogue.names():
        raise NotFound(f"no runbook named {name!r}; see /runbooks for the catalogue")
    runbook = catalogue.runbook(name)
    d = runbook.definition
    verify, rollback = runbook.part(StepKind.VERIFY), runbook.part(StepKind.ROLLBACK)
    target = "nothing in the cluster" if d.max_targets == 0 else (
        f"one {d.target_kind}" if d.max_targets == 1 else f"up to {d.max_targets} of kind {d.target_kind}")
    verification = f"Within {d.verify_deadline_s:g} s of executing, gpuops checks that {d.expected_effect}."
    if verify is not None and _doc(verify.fn):
        verification += " " + _doc(verify.fn)
    if rollback is None:
        undo = ("None: what it did stays. A failed verification counts towards the circuit breaker and escalates the "
                "incident to a human.")
    else:
        undo = "When verification fails, gpuops runs its rollback" + (f": {_doc(rollback.fn)}" if _doc(rollback.fn)
                                                                      else ", undoing only what this plan did.")
    risk_note = ("A risk check may raise this for a particular plan."
                 if runbook.part(StepKind.RISK) is not None else "")
    return RunbookDoc(
        name=d.name, title=d.title, description=d.description, url=runbook_doc_url(d.name), risk=str(d.risk),
        risk_note=risk_note, approvals=approvals_for(d, policy), targets=target, disruptive=d.disruptive,
        parameters=parameters_of(d), verification=verification, rollback=undo, has_rollback=rollback is not None,
        dry_run="Every plan is dry-run before approval: the page of its incident shows the changes it would make.",
        steps=[s.name.replace("_", " ") for s in runbook.steps],
        body=Markup(_MARKDOWN.render(doc_text(d.name) or "")))  # markdown-it escapes; raw HTML is off


@router.get("/runbooks", response_class=HTMLResponse)
def runbooks_index(request: Request, user: PageUser) -> HTMLResponse:
    container: Container = request.app.state.container
    docs = [runbook_doc(container.catalogue, container.policy, n) for n in container.catalogue.names()]
    return render(request, "runbooks.html", {"runbooks": docs}, user)


@router.get("/runbooks/{name}", response_class=HTMLResponse)
def runbook_page(request: Request, name: Name, user: PageUser) -> HTMLResponse:
    container: Container = request.app.state.container
    return render(request, "runbook.html", {"runbook": runbook_doc(container.catalogue, container.policy, name)},
                  user)
