"""Settings: one clear line naming the setting, never a stack trace or a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import get_settings, load_local_settings


def test_defaults_are_the_public_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.partner_center_api_url == "https://api.partner.microsoft.com/v1.0/engagements"
    assert settings.salesforce_login_url == "https://login.salesforce.com"
    assert settings.cosell_dry_run is False


def test_missing_setting_is_named_at_first_use() -> None:
    settings = get_settings()  # loading alone does not fail: nothing is required yet
    with pytest.raises(ConfigError, match=r"^setting PARTNER_CENTER_CLIENT_ID is not set: add it"):
        settings.require("partner_center_client_id")


def test_secret_settings_come_back_unwrapped_only_through_require(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESFORCE_PASSWORD", "s3cret-value")
    settings = get_settings()
    assert "s3cret-value" not in repr(settings)
    assert settings.require("SALESFORCE_PASSWORD") == "s3cret-value"


def test_malformed_values_are_listed_by_setting_name_without_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSELL_DRY_RUN", "maybe")
    monkeypatch.setenv("PARTNER_CENTER_API_URL", "http://insecure.example")
    monkeypatch.setenv("SALESFORCE_PASSWORD", "s3cret-value")
    with pytest.raises(ConfigError) as raised:
        get_settings()
    message = str(raised.value)
    assert "setting COSELL_DRY_RUN:" in message
    assert "setting PARTNER_CENTER_API_URL: Value error, must be an https:// URL" in message
    assert "maybe" not in message and "s3cret" not in message
    assert "\n" not in message


def test_local_settings_values_reach_the_environment_but_do_not_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"COSELL_MAX_ATTEMPTS": "7", "COSELL_SF_BUDGET_SHARE": "0.5"}}))
    monkeypatch.setenv("COSELL_SF_BUDGET_SHARE", "0.9")
    monkeypatch.delenv("COSELL_MAX_ATTEMPTS", raising=False)

    load_local_settings(path)

    settings = get_settings()
    assert settings.cosell_max_attempts == 7
    assert settings.cosell_sf_budget_share == 0.9
    monkeypatch.delenv("COSELL_MAX_ATTEMPTS")


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not json", "is not valid JSON"), ('{"Values": []}', 'has no "Values" object'), ("[]", 'has no "Values"')],
)
def test_malformed_local_settings_is_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_local_settings(path)
    assert "\n" not in str(raised.value)


def test_example_settings_file_lists_every_setting_with_a_comment() -> None:
    from shared.settings import APP_ROOT, Settings

    example = json.loads((APP_ROOT / "local.settings.example.json").read_text())
    names = {name.upper() for name in Settings.model_fields} - {"AZUREWEBJOBSSTORAGE", "WEBSITE_HOSTNAME"}
    values = {name.upper() for name in example["Values"]}
    comments = {name.upper() for name in example["Comments"]}
    assert names <= values, names - values
    assert names <= comments, names - comments


def test_the_poll_defaults_to_every_15_minutes_once_push_is_configured_but_an_explicit_schedule_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import PUSH_POLL_SCHEDULE, load_settings

    monkeypatch.delenv("COSELL_SF_POLL_SCHEDULE", raising=False)
    monkeypatch.delenv("SALESFORCE_ORG_ID", raising=False)
    assert load_settings().poll_schedule == "0 */1 * * * *"
    monkeypatch.setenv("SALESFORCE_ORG_ID", "00DHs0000000001IAA")
    assert load_settings().poll_schedule == PUSH_POLL_SCHEDULE == "0 */15 * * * *"
    monkeypatch.setenv("COSELL_SF_POLL_SCHEDULE", "0 */5 * * * *")
    assert load_settings().poll_schedule == "0 */5 * * * *"
