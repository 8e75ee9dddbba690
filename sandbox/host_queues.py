"""Queue triggers of the local host: poll Azurite (or Azure Storage) the way the real host does.

Why these rules: the connector's retry and dead-letter behaviour rests on them. A message whose
function raises comes back after `visibilityTimeout`; once it has been dequeued `maxDequeueCount`
times it moves, unchanged, to `<queue>-poison`; a batch runs in parallel; an idle queue is polled
less and less often, up to `maxPollingInterval`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Executor, wait
from typing import Any

import azure.functions.queue as func_queue
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import LinearRetry, QueueClient, QueueMessage, QueueServiceClient

from sandbox.host_config import QueueOptions
from sandbox.host_index import HostedFunction, Worker, log_invocation
from shared.errors import ConfigError, Unavailable

log = logging.getLogger("sandbox.host")

_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_LEASE_SECONDS = 300
"""How long a received message stays hidden while its function runs (the real host renews; we do not)."""
_MIN_POLL_SECONDS = 0.1
_DEFAULT_CONNECTION = "AzureWebJobsStorage"
_PREFIX = "AzureWebJobs"
_IDENTITY_KEYS = ("accountName", "queueServiceUri", "serviceUri")


def connection_string(setting: str | None, env: Mapping[str, str], function: str) -> str:
    """The connection string a trigger's `connection` names, looked up where the real queue extension looks:
    AzureWebJobs<name>, then <name>; no name means AzureWebJobsStorage.

    Why no fallback from COSELL_STORAGE to AzureWebJobsStorage (which the connector's own settings make): the
    real host has none, so a queue trigger whose connection is unset never runs there (sandbox/host_rules.py).
    An identity-based connection (`<name>__accountName`, ...) is what Azure uses; locally it is an error.
    """
    name = setting or _DEFAULT_CONNECTION.removeprefix(_PREFIX)
    for candidate in (_PREFIX + name, name):
        if env.get(candidate):
            return env[candidate]
        if identity := next((f"{candidate}__{key}" for key in _IDENTITY_KEYS if env.get(f"{candidate}__{key}")), None):
            raise ConfigError(f"function {function}: {identity} asks for an identity-based connection, which "
                              f"only Azure provides: locally, set {name} to a connection string")
    raise ConfigError(f"function {function}: connection setting {name} is not set: add the "
                      "storage connection string to local.settings.json (Values) or the environment")


class QueuePoller:
    """Runs one queue-triggered function against one queue until `stop()`.

    Args:
        executor: where a batch's messages are handed to the worker, in parallel; shared by all pollers.
        worker: where the function runs.
    """

    def __init__(self, function: HostedFunction, *, queue_name: str, connection: str, options: QueueOptions,
                 executor: Executor, worker: Worker) -> None:
        if not _QUEUE_NAME.match(queue_name):
            raise ConfigError(f"function {function.name}: {queue_name!r} is not a valid queue name "
                              "(3-63 lower-case letters, digits and single hyphens)")
        self.function = function
        self.queue_name = queue_name
        self.options = options
        self._executor = executor
        self._worker = worker
        try:
            service = QueueServiceClient.from_connection_string(
                connection, retry_policy=LinearRetry(backoff=1, retry_total=2, random_jitter_range=1), connection_timeout=5)
        except ValueError:  # the SDK's "blank or malformed" names no setting; never echo the value (a key)
            setting = function.trigger.connection or _DEFAULT_CONNECTION
            raise ConfigError(f"function {function.name}: setting {setting} is not a storage connection string: copy "
                              "one from the storage account (UseDevelopmentStorage=true for Azurite)") from None
        self._endpoint = service.url.rstrip("/")
        self._queue = service.get_queue_client(queue_name)
        self._poison = service.get_queue_client(f"{queue_name}-poison")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"host-queue-{function.name}")

    def prepare(self) -> None:
        """Create the queue if it does not exist, which also proves the storage account is reachable.

        Raises:
            Unavailable: one line saying where storage was expected and what to do.
        """
        try:
            _create_if_missing(self._queue)
        except AzureError as exc:
            raise self._unreachable(exc) from None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; the batch in flight finishes first (its messages are settled, not abandoned)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _unreachable(self, exc: AzureError) -> Unavailable:
        reason = type(exc).__name__
        return Unavailable(f"cannot reach queue storage at {self._endpoint} for function {self.function.name} "
                           f"({reason}): start Azurite, or check COSELL_STORAGE / AzureWebJobsStorage")

    def _run(self) -> None:
        delay, failing = 0.0, False
        while not self._stop.wait(delay):
            try:
                received = self._poll_once()
            except AzureError as exc:
                if not failing:
                    log.warning("%s; retrying every %.0f s", self._unreachable(exc), self.options.max_polling_interval)
                failing, delay = True, self.options.max_polling_interval
                continue
            if failing:
                log.info("queue storage for %s is reachable again", self.function.name)
                failing = False
            delay = 0.0 if received else min(max(delay * 2, _MIN_POLL_SECONDS), self.options.max_polling_interval)

    def _poll_once(self) -> int:
        messages = list(self._queue.receive_messages(
            messages_per_page=self.options.batch_size, max_messages=self.options.batch_size,
            visibility_timeout=_LEASE_SECONDS))
        wait([self._executor.submit(self._process, message) for message in messages])
        return len(messages)

    def _process(self, message: QueueMessage) -> None:
        """Run the function for one message and settle it: delete, retry later, or poison."""
        tries = f"try {message.dequeue_count}/{self.options.max_dequeue_count}"
        if message.dequeue_count > self.options.max_dequeue_count:
            self._settle(self._to_poison, message, f"it was already dequeued {message.dequeue_count} times")
            return
        body = self._decode(message.content)
        if body is None:
            self._settle(self._to_poison, message, "its body is not base64 (host.json messageEncoding is base64)")
            return
        outcome = self._worker.invoke(self.function, func_queue.QueueMessage(
            id=message.id, body=body, pop_receipt=message.pop_receipt, dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on, expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on))
        log_invocation(self.function, outcome, f"{self.queue_name} message {message.id} {tries}")
        if outcome.error is None:
            self._settle(self._queue.delete_message, message)
        elif message.dequeue_count >= self.options.max_dequeue_count:
            self._settle(self._to_poison, message, f"it failed {message.dequeue_count} times")
        else:
            self._settle(self._queue.update_message, message,
                         visibility_timeout=round(self.options.visibility_timeout))

    def _decode(self, content: Any) -> bytes | None:
        text = content if isinstance(content, str) else ""
        if self.options.message_encoding == "none":
            return text.encode("utf-8")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _to_poison(self, message: QueueMessage, reason: str) -> None:
        _create_if_missing(self._poison)
        self._poison.send_message(message.content)
        self._queue.delete_message(message)
        log.warning("Moved message %s of queue %s to %s-poison: %s", message.id, self.queue_name, self.queue_name,
                    reason)

    def _settle(self, action: Any, message: QueueMessage, *args: Any, **kwargs: Any) -> None:
        """Run a storage call on a processed message; a failure is logged, as the message reappears anyway."""
        try:
            action(message, *args, **kwargs)
        except AzureError as exc:
            log.warning("could not settle message %s of queue %s (%s): it will be delivered again", message.id,
                        self.queue_name, type(exc).__name__)


def _create_if_missing(queue: QueueClient) -> None:
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass


__all__ = ["QueuePoller", "connection_string"]
