"""The Azure Functions entry point: only wiring.

Each blueprint in shared/functions/ holds thin triggers that call shared/sync. Nothing here (or in the
blueprint modules) imports an SDK at load time, so a cold start costs little more than azure.functions.
"""

import azure.functions as func

from shared.functions import health, partner_center, salesforce, status, sync

app = func.FunctionApp()

for blueprint in (health.bp, partner_center.bp, salesforce.bp, status.bp, sync.bp):
    app.register_functions(blueprint)
