"""Table Storage and queues: links, sync state, cursors, create intents, sync log, dead letters.

Every update uses the entity's ETag (If-Match); a concurrent writer gets `Conflict`, never a silent
overwrite. Imported lazily by the functions (it pulls in the Azure SDK).
"""

from shared.store.account import IntentStore, Store
from shared.store.links import LinkStore
from shared.store.queues import FORWARD_QUEUE, OPPORTUNITY_QUEUE, REFERRAL_QUEUE, QueueSender
from shared.store.secrets import SecretStore
from shared.store.synclog import SyncLogStore
from shared.store.tables import RecordTable, Table

__all__ = [
    "FORWARD_QUEUE",
    "OPPORTUNITY_QUEUE",
    "REFERRAL_QUEUE",
    "IntentStore",
    "LinkStore",
    "QueueSender",
    "RecordTable",
    "SecretStore",
    "Store",
    "SyncLogStore",
    "Table",
]
