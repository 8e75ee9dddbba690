"""Sync triggers: the opportunity processor and the reconcile timer (the referral processor sits with the
other Partner Center triggers). Module level imports only azure.functions (cold start)."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("shared.functions.sync")

# Literal: the decorator needs it at import time; equals shared.store.queues.OPPORTUNITY_QUEUE (a test checks).
OPPORTUNITY_QUEUE_NAME = "opportunity-changes"


@bp.function_name("salesforce_opportunity_changes")
@bp.queue_trigger(arg_name="msg", queue_name=OPPORTUNITY_QUEUE_NAME, connection="COSELL_STORAGE")
def salesforce_opportunity_changes(msg: func.QueueMessage) -> None:
    """An opportunity changed: sync it (create its referral when opted in, else merge the pair)."""
    from shared.runtime import services
    from shared.sync.processor import process_opportunity

    process_opportunity(services(), msg.get_json())


@bp.function_name("partner_center_reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%COSELL_PC_RECONCILE_SCHEDULE%", run_on_startup=False)
def partner_center_reconcile(timer: func.TimerRequest) -> None:
    """Catch what webhooks and the poll missed: queue referrals updated since the last run, waiting
    opportunities and unfinished create intents."""
    from shared.runtime import services
    from shared.sync.reconcile import reconcile
    from shared.telemetry import logged_run

    with logged_run("partner_center_reconcile"):
        result = reconcile(services())
    log.info("reconcile: %d referral(s) listed, %d queued; %d opportunity(ies) and %d intent(s) queued",
             result.referrals_listed, result.referrals_queued, result.opportunities_queued, result.intents_queued)
