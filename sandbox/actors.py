"""The people of the sandbox, over HTTP: a seller in Salesforce, a Microsoft seller in Partner Center.

Why HTTP rather than the simulators' Python methods: the demo also plays against a sandbox another process
runs (`make run` in one terminal, `make demo` in another). The simulators' `/_sandbox/` routes work the
same either way, so the seeds and the demo have one code path, and that path is the documented one.

A running sandbox describes itself in `.sandbox/sandbox.json` (`SandboxInfo`): the URLs, the sandbox CA
and the throwaway function key of the local host.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from shared.errors import ConnectorError, InvalidInput, NotFound, Unavailable

INFO_FILE = "sandbox.json"
_TIMEOUT = 15


@dataclass(frozen=True)
class SandboxInfo:
    """Where the parts of a running sandbox answer.

    Attributes:
        pid: the `python -m sandbox.run` process.
        host_url: the Functions host, e.g. http://127.0.0.1:7071.
        function_key: COSELL_LOCAL_FUNCTION_KEY of the sandbox (a throwaway local value).
        partner_center_url / salesforce_url: the simulators.
        ca_pem: the sandbox CA the simulators' certificates chain to.
    """

    pid: int
    host_url: str
    function_key: str | None
    partner_center_url: str
    salesforce_url: str
    ca_pem: str

    @property
    def status_url(self) -> str:
        return self.host_url + "/api/status" + (f"?code={self.function_key}" if self.function_key else "")

    def save(self, directory: Path) -> Path:
        path = directory / INFO_FILE
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        path.chmod(0o600)
        return path

    @classmethod
    def load(cls, directory: Path) -> SandboxInfo | None:
        """The sandbox described in `directory`, or None when none is running there."""
        path = directory / INFO_FILE
        try:
            info = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        return info if _alive(info.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answer(response: requests.Response, what: str) -> Any:
    """The JSON of a 2xx answer; any other status becomes a connector error naming `what`."""
    if response.ok:
        return response.json() if response.content else None
    detail = response.text[:300]
    if response.status_code == 404:
        raise NotFound(f"{what}: {response.status_code} {detail}")
    if response.status_code in (400, 422):
        raise InvalidInput(f"{what}: {response.status_code} {detail}")
    raise ConnectorError(f"{what}: {response.status_code} {detail}")


class Actors:
    """A seller (Salesforce simulator), Microsoft (Partner Center simulator) and the app's own routes.

    Args:
        info: the running sandbox.
        session: injectable for tests; one keep-alive session otherwise.
    """

    def __init__(self, info: SandboxInfo, session: requests.Session | None = None) -> None:
        self.info = info
        self.session = session or requests.Session()

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        try:
            # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE from the environment
            response = self.session.request(method, url, timeout=_TIMEOUT, verify=self.info.ca_pem, **kwargs)
        except requests.RequestException as exc:
            raise Unavailable(f"{what}: {url.split('/_sandbox')[0]} did not answer ({type(exc).__name__})") from None
        return _answer(response, what)

    # The seller, in Salesforce --------------------------------------------------------------------

    def seller_create(self, sobject: str, fields: dict[str, Any]) -> str:
        """Create a record as the seller; returns its Id."""
        created = self._call("POST", f"{self.info.salesforce_url}/_sandbox/seller/sobjects/{sobject}",
                             f"create {sobject} as the seller", json=fields)
        return str(created["id"])

    def seller_update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        self._call("PATCH", f"{self.info.salesforce_url}/_sandbox/seller/sobjects/{sobject}/{record_id}",
                   f"update {sobject} {record_id} as the seller", json=fields)

    def records(self, sobject: str) -> list[dict[str, Any]]:
        """Every record of a type, all fields (deleted ones included, `IsDeleted` tells)."""
        return list(self._call("GET", f"{self.info.salesforce_url}/_sandbox/records/{sobject}",
                               f"list {sobject} records"))

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records(sobject) if r.get("Id") == record_id), None)

    # Microsoft, in Partner Center -----------------------------------------------------------------

    def microsoft_referral(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A Microsoft seller shares a referral with the partner (New/Received)."""
        return dict(self._call("POST", f"{self.info.partner_center_url}/_sandbox/referrals",
                               "send a referral as Microsoft", json=fields))

    def microsoft_update(self, referral_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PATCH", f"{self.info.partner_center_url}/_sandbox/referrals/{referral_id}",
                               f"update referral {referral_id} as Microsoft", json=fields))

    def referrals(self) -> list[dict[str, Any]]:
        state = self._call("GET", f"{self.info.partner_center_url}/_sandbox/state", "read Partner Center's state")
        return list(state["referrals"])

    def referral(self, referral_id: str) -> dict[str, Any] | None:
        return next((r for r in self.referrals() if r.get("id") == referral_id), None)

    # The app --------------------------------------------------------------------------------------

    def app(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        """Call one of the app's routes (`route` after /api/), with the function key when there is one."""
        headers = {"x-functions-key": self.info.function_key} if self.info.function_key else {}
        return self.session.request(method, f"{self.info.host_url}/api/{route}", headers=headers, timeout=30, **kwargs)

    def close(self) -> None:
        self.session.close()


__all__ = ["INFO_FILE", "Actors", "SandboxInfo"]
