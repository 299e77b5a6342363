"""Every runbook in the catalogue has a documentation page: its markdown exists, and /runbooks/<name> renders
what it does, its preconditions, risk, the approvals the policy in force asks, verification and rollback; the
index links every page; an unknown or malformed name is a 404 / 422, and a visitor must sign in."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from entrypoints.web.links import runbook_doc_url
from entrypoints.web.runbook_docs import approvals_for
from gpuops.policy.config import PolicyConfig
from runbooks import default_catalogue
from runbooks.documentation import doc_path, doc_text
from tests.web_server import WebServer, serve_on, sign_in

NAMES = default_catalogue().names()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('runbook-docs') / 'gpuops.db'}"
    with serve_on(url) as server:
        yield server


@pytest.fixture(scope="module")
def client(web: WebServer) -> Iterator[httpx.Client]:
    with sign_in(web.url, "vera") as signed_in:
        yield signed_in


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@pytest.mark.parametrize("name", NAMES)
def test_every_runbook_has_a_doc_with_its_preconditions(name: str) -> None:
    text = doc_text(name)
    assert text is not None, f"write {doc_path(name)}"
    assert "## Preconditions" in text and "## When gpuops uses it" in text


@pytest.mark.parametrize("name", NAMES)
def test_every_runbook_page_renders_from_the_definition_and_the_doc(client: httpx.Client, name: str) -> None:
    definition = default_catalogue().get(name)
    response = client.get(runbook_doc_url(name))
    assert response.status_code == 200
    text = _text(response.text)
    assert definition.title in text and definition.description in text
    assert f"Risk {definition.risk}" in text
    assert approvals_for(definition, PolicyConfig()) in text
    assert definition.expected_effect in text
    assert ("Rollback None" in text) is not definition.has_rollback
    assert 'id="runbook-doc"' in response.text and "<h2>Preconditions</h2>" in response.text
    for parameter in definition.params_model.model_json_schema().get("properties", {}):
        assert f"<code>{parameter}</code>" in response.text


def test_approvals_follow_the_policy() -> None:
    catalogue = default_catalogue()
    assert approvals_for(catalogue.get("notify_only"), PolicyConfig()).startswith("none")
    assert approvals_for(catalogue.get("notify_only"), PolicyConfig(auto_approve=frozenset())).startswith("one")
    assert approvals_for(catalogue.get("reboot_node"), PolicyConfig()).startswith("two")
    assert approvals_for(catalogue.get("drain_node"), PolicyConfig()).startswith("one")


def test_the_index_links_every_runbook(client: httpx.Client) -> None:
    page = client.get("/runbooks")
    assert page.status_code == 200
    assert set(re.findall(r'href="/runbooks/([a-z_]+)"', page.text)) == set(NAMES)


def test_unknown_and_malformed_names(client: httpx.Client) -> None:
    missing = client.get("/runbooks/format_disks")
    assert missing.status_code == 404 and "no runbook named" in _text(missing.text)
    assert client.get("/runbooks/Drain..node").status_code == 422
    assert doc_text("../README") is None


def test_a_visitor_must_sign_in(web: WebServer) -> None:
    response = httpx.get(f"{web.url}/runbooks/drain_node", timeout=10, follow_redirects=False)
    assert response.status_code in (303, 401) and "Preconditions" not in response.text
