"""Salesforce: login, queries, batched writes, the API budget, the org's describe, change polling.

Imported lazily by the functions (it pulls in simple-salesforce).
"""

from shared.salesforce.auth import Credentials, Grant
from shared.salesforce.budget import BUDGET_DOC, ApiBudget, ApiUsage
from shared.salesforce.client import COLLECTION_SIZE, COMPOSITE_SIZE, SalesforceClient
from shared.salesforce.describe import FieldDescribe, OrgSchema, SObjectDescribe
from shared.salesforce.results import RecordError, RecordResult, SubRequest, SubResponse
from shared.salesforce.retry import RetryPolicy

__all__ = [
    "BUDGET_DOC",
    "COLLECTION_SIZE",
    "COMPOSITE_SIZE",
    "ApiBudget",
    "ApiUsage",
    "Credentials",
    "FieldDescribe",
    "Grant",
    "OrgSchema",
    "RecordError",
    "RecordResult",
    "RetryPolicy",
    "SObjectDescribe",
    "SalesforceClient",
    "SubRequest",
    "SubResponse",
]
