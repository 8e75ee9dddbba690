"""The Azure Functions entry point: only wiring.

Each blueprint in shared/functions/ holds thin triggers that call shared/sync. Nothing here (or in the
blueprint modules) imports an SDK at load time, so a cold start costs little more than azure.functions.
"""

import azure.functions as func

from shared.functions import health, partner_center, salesforce, status, sync

BLUEPRINTS = (health.bp, partner_center.bp, salesforce.bp, status.bp, sync.bp)
"""Every blueprint of the app (tests that need a fresh FunctionApp register these same ones)."""

app = func.FunctionApp()

for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
