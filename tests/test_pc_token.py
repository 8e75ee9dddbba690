"""Tokens through the real MSAL path: refresh, rotation persisted in Table Storage, caching, MFA, health."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from sandbox.partner_center import PartnerCenterSim
from shared.errors import AuthExpired, MfaRequired
from shared.models.records import StatusDoc
from shared.partner_center import PartnerCenterClient, RefreshTokenCredential, RetryPolicy, WebhookRegistrationClient
from shared.partner_center.token import REFRESH_TOKEN_SECRET, TOKEN_STATUS
from shared.settings import get_settings

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)


def _client(store) -> PartnerCenterClient:  # type: ignore[no-untyped-def]
    return PartnerCenterClient.from_settings(get_settings(), store=store, retry=FAST)


def test_refresh_rotates_and_persists_the_newest_token(pc_sim: PartnerCenterSim, pc_env: dict[str, str], pc_store,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seed = pc_env["PARTNER_CENTER_REFRESH_TOKEN"]
    referral_id = pc_sim.create_incoming()["id"]
    client = _client(pc_store)
    client.get_referral(referral_id)
    stored = pc_store.secrets.get(REFRESH_TOKEN_SECRET)
    assert stored and stored != seed and stored in pc_sim.refresh_tokens

    # The access token is cached: more calls, no more token requests.
    requests_so_far = pc_sim.token_requests
    client.get_referral(referral_id)
    client.get_referral(referral_id)
    assert pc_sim.token_requests == requests_so_far

    # A new process (new client) redeems the stored token, not the seed: the seed can be gone.
    pc_sim.revoke_refresh_tokens(seed)
    _client(pc_store).get_referral(referral_id)
    newest = pc_store.secrets.get(REFRESH_TOKEN_SECRET)
    assert newest not in (seed, stored)

    health = pc_store.status.get(TOKEN_STATUS).data
    assert health["last_refresh_at"] and health["refresh_token_source"] == "store"
    assert health["refresh_token_age_days"] < 1 and health["warning"] is None and health["last_error"] is None
    logged = caplog.text
    assert all(token not in logged for token in (seed, stored, newest))  # never logged


def test_a_new_setting_after_re_consent_wins_over_the_stored_token(pc_sim: PartnerCenterSim, pc_env: dict[str, str],
                                                                    pc_store, monkeypatch: pytest.MonkeyPatch) -> None:
    referral_id = pc_sim.create_incoming()["id"]
    _client(pc_store).get_referral(referral_id)
    pc_sim.revoke_refresh_tokens()  # everything the connector held is dead
    with pytest.raises(AuthExpired, match="invalid_grant"):
        _client(pc_store).get_referral(referral_id)
    assert "invalid_grant" in pc_store.status.get(TOKEN_STATUS).data["last_error"]

    monkeypatch.setenv("PARTNER_CENTER_REFRESH_TOKEN", pc_sim.mint_refresh_token())
    get_settings.cache_clear()
    assert _client(pc_store).get_referral(referral_id).id == referral_id


def test_401_refreshes_the_access_token_once(pc_sim: PartnerCenterSim, pc_env: dict[str, str], pc_store) -> None:
    referral_id = pc_sim.create_incoming()["id"]
    client = _client(pc_store)
    client.get_referral(referral_id)
    before = pc_sim.token_requests
    pc_sim.access_tokens.clear()  # the API no longer knows the cached token
    assert client.get_referral(referral_id).id == referral_id
    assert pc_sim.token_requests == before + 1


def test_token_without_mfa_stops_with_a_plain_message_and_no_retry(pc_sim: PartnerCenterSim, pc_env: dict[str, str],
                                                                    pc_store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_CENTER_REFRESH_TOKEN", pc_sim.mint_refresh_token(mfa=False))
    get_settings.cache_clear()
    referral_id = pc_sim.create_incoming()["id"]
    client = _client(pc_store)
    with pytest.raises(MfaRequired) as info:
        client.get_referral(referral_id)
    assert "multi-factor" in str(info.value) and "900421" in str(info.value)
    assert pc_sim.token_requests == 1  # no refresh-and-retry loop on 900421
    health = pc_store.status.get(TOKEN_STATUS).data
    assert health["mfa_required"] is True


def test_app_only_token_for_webhook_registration(pc_sim: PartnerCenterSim, pc_env: dict[str, str]) -> None:
    client = WebhookRegistrationClient.from_settings(get_settings(), retry=FAST)
    assert "referral-updated" in client.list_events()
    assert client.get_registration() is None
    assert pc_sim.token_requests == 1
    assert {t.kind for t in pc_sim.access_tokens.values()} == {"app"}


class _NoRotationApp:
    """An MSAL stand-in whose authority returns no new refresh token (so the token ages)."""

    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str]) -> dict[str, object]:
        return {"access_token": "at", "expires_in": 3600}


def test_health_warns_well_before_the_90_day_expiry(pc_store) -> None:  # type: ignore[no-untyped-def]
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=70)
    pc_store.status.put(StatusDoc(name=TOKEN_STATUS, data={"refresh_token_obtained_at": old.isoformat()}))
    pc_store.secrets.put(REFRESH_TOKEN_SECRET, "rt-stored")
    credential = RefreshTokenCredential(lambda: _NoRotationApp(), secrets=pc_store.secrets, status=pc_store.status,
                                        seed_refresh_token=None)
    assert credential.token() == "at"
    health = pc_store.status.get(TOKEN_STATUS).data
    assert 69.9 < health["refresh_token_age_days"] < 70.1
    assert "70 days old" in health["warning"] and "re-consent" in health["warning"]
