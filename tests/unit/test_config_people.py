"""Approvers are people (issue 16): GPUOPS_SLACK_USERS links Slack ids to dashboard users and is checked at load;
GPUOPS_APPROVERS keeps its meaning for Slack ids no one linked (each a person of their own) and grants dashboard
user names nothing."""

from __future__ import annotations

import pytest

from gpuops.config import load_settings
from gpuops.errors import ConfigError

FAKE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"
USERS = f"alice:approver:{FAKE_HASH};bob:admin:{FAKE_HASH};vera:viewer:{FAKE_HASH}"


def test_approvers_are_the_slack_ids_no_one_linked() -> None:
    settings = load_settings({"GPUOPS_USERS": USERS, "GPUOPS_SLACK_USERS": "U0ALICE:alice",
                              "GPUOPS_APPROVERS": "U0ALICE, U0CAROL, vera"})
    assert settings.unlinked_approvers() == ("U0CAROL",)  # alice's id is alice; a user name grants nothing
    assert load_settings({"GPUOPS_APPROVERS": ""}).unlinked_approvers() == ()


def test_slack_ids_link_to_dashboard_users() -> None:
    settings = load_settings({"GPUOPS_USERS": USERS, "GPUOPS_SLACK_USERS": " U0ALICE:alice, W0BOB : bob ,,"})
    assert settings.slack_users == (("U0ALICE", "alice"), ("W0BOB", "bob"))
    assert settings.slack_person("U0ALICE") == "alice" and settings.person_role("alice") == "approver"
    assert settings.slack_person("U0MALLORY") is None


def test_a_link_to_a_user_who_does_not_exist_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"GPUOPS_USERS": USERS, "GPUOPS_SLACK_USERS": "U0ALICE:alice,U0EVE:eve"})
    assert "GPUOPS_SLACK_USERS" in str(info.value) and "'eve'" in str(info.value)
    assert "GPUOPS_USERS" in str(info.value)


def test_a_slack_id_linked_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"GPUOPS_USERS": USERS, "GPUOPS_SLACK_USERS": "U0ALICE:alice,U0ALICE:bob"})
    assert "GPUOPS_SLACK_USERS" in str(info.value) and "U0ALICE is linked twice" in str(info.value)


@pytest.mark.parametrize("entry", ["alice", "U0ALICE:", "not-a-slack-id:alice", "u0alice:alice"])
def test_a_malformed_link_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"GPUOPS_USERS": USERS, "GPUOPS_SLACK_USERS": entry})
    assert "GPUOPS_SLACK_USERS" in str(info.value) and "SlackUserId:user" in str(info.value)


def test_a_user_signed_in_by_the_proxy_may_be_linked_by_name_but_not_through_the_wildcard() -> None:
    settings = load_settings({"GPUOPS_PROXY_ROLES": "carol:approver,*:viewer", "GPUOPS_SLACK_USERS": "U0CAROL:carol"})
    assert settings.person_role("carol") == "approver"
    with pytest.raises(ConfigError):
        load_settings({"GPUOPS_PROXY_ROLES": "*:approver", "GPUOPS_SLACK_USERS": "U0DAVE:dave"})
