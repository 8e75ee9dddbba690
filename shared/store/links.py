"""Links between referrals and opportunities, findable from either side.

Why two rows: Table Storage looks rows up by key only. One row keyed by referral id and one keyed by
opportunity id, written in one transaction (same partition), so a crash never leaves half a link.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.errors import AlreadyExists
from shared.models.records import Link
from shared.store.tables import Table, pack, unpack

PARTITION = "link"


def _row(side: str, record_id: str) -> str:
    return f"{side}-{record_id}"


class LinkStore:
    """Both directions of every link, in one partition so they can be written atomically."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def _get(self, row: str) -> Link | None:
        entity = self.table.get(PARTITION, row)
        if entity is None:
            return None
        link = Link.model_validate(unpack(entity))
        link.etag = entity.get("etag")
        return link

    def get_by_referral(self, referral_id: str) -> Link | None:
        return self._get(_row("ref", referral_id))

    def get_by_opportunity(self, opportunity_id: str) -> Link | None:
        return self._get(_row("opp", opportunity_id))

    def create(self, link: Link) -> Link:
        """Write both rows at once.

        Raises:
            AlreadyExists: the referral or the opportunity is already linked (possibly by a racing writer).
        """
        values = pack(link.model_dump(mode="json"))
        rows = [_row("ref", link.referral_id), _row("opp", link.opportunity_id)]
        operations = [("create", {"PartitionKey": PARTITION, "RowKey": row, **values}) for row in rows]
        try:
            self.table.transaction(operations, what=f"link {link.referral_id} <-> {link.opportunity_id}")
        except AlreadyExists:
            raise AlreadyExists(
                f"referral {link.referral_id} or opportunity {link.opportunity_id} is already linked"
            ) from None
        return link.model_copy()

    def delete(self, link: Link) -> None:
        operations = [("delete", {"PartitionKey": PARTITION, "RowKey": row})
                      for row in (_row("ref", link.referral_id), _row("opp", link.opportunity_id))]
        self.table.transaction(operations, what=f"unlink {link.referral_id}")

    def list(self) -> Iterator[Link]:
        """Every link once (from its referral-side row)."""
        for entity in self.table.query("PartitionKey eq @pk and RowKey ge 'ref-' and RowKey lt 'ref.'",
                                       {"pk": PARTITION}):
            link = Link.model_validate(unpack(entity))
            link.etag = entity.get("etag")
            yield link
