"""Sending work to the Storage queues that the queue-triggered functions read.

Messages are small JSON documents ("look at referral X"), base64-encoded because that is what the
Functions host expects by default (host.json `messageEncoding`).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared.errors import Unavailable
from shared.store.connection import storage_credential, storage_target, transport_options

if TYPE_CHECKING:
    from shared.settings import Settings

REFERRAL_QUEUE = "referral-changes"
OPPORTUNITY_QUEUE = "opportunity-changes"
FORWARD_QUEUE = "webhook-forward"


def _client_options(endpoint: str) -> dict[str, Any]:
    """Fail within about two seconds when the queue cannot be reached. Why: the webhook receiver must answer
    Partner Center quickly (503: it delivers again later), and the storage SDK's default retry waits 15 s, then
    18 s, then 24 s (`retry_backoff_factor` does not change that; only a `retry_policy` does)."""
    return {"retry_policy": LinearRetry(backoff=0.5, retry_total=2, random_jitter_range=0.25),
            "connection_timeout": 2, "read_timeout": 10, **transport_options(endpoint)}


class QueueSender:
    """Puts JSON messages on named queues, creating a queue the first time it is used."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str) -> QueueSender:
        endpoint = QueueServiceClient.from_connection_string(connection_string).url  # parsed: no request made
        return cls(QueueServiceClient.from_connection_string(connection_string, **_client_options(endpoint)))

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueSender:
        """A connection string, or the Queue endpoint with the app's managed identity (see `storage_target`)."""
        target = storage_target(settings)
        if target.connection_string is not None:
            return cls.from_connection_string(target.connection_string)
        return cls(QueueServiceClient(target.queue_url, credential=storage_credential(),
                                      **_client_options(target.queue_url)))

    def _client(self, queue: str) -> QueueClient:
        with self._lock:
            client = self._clients.get(queue)
            if client is None:
                client = self._service.get_queue_client(queue, message_encode_policy=TextBase64EncodePolicy())
                self._clients[queue] = client
            return client

    def send(self, queue: str, payload: dict[str, Any], *, delay_seconds: int | None = None) -> None:
        """Enqueue one message; `delay_seconds` hides it for that long (a retry with back-off)."""
        client = self._client(queue)
        body = json.dumps(payload, separators=(",", ":"))
        try:
            try:
                client.send_message(body, visibility_timeout=delay_seconds)
            except ResourceNotFoundError:
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                client.send_message(body, visibility_timeout=delay_seconds)
        except (ServiceRequestError, ServiceResponseError):  # refused, reset, timed out
            raise Unavailable(
                f"Queue storage is not reachable at {self._service.url}: start Azurite (`make run` does) "
                "or check the COSELL_STORAGE / AzureWebJobsStorage setting"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise Unavailable(f"Queue storage answered {exc.status_code} at {self._service.url}") from None
            raise


__all__ = ["FORWARD_QUEUE", "OPPORTUNITY_QUEUE", "REFERRAL_QUEUE", "QueueSender"]
