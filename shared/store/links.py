"""Links between referrals and opportunities, findable from either side.

Why several rows: Table Storage looks rows up by key only. One row keyed by referral id, one keyed by
opportunity id and, when the referral belongs to a co-sell engagement, one keyed by engagement id and
referral id (so an event about Microsoft's related referral finds the partner's referrals), all written in
one transaction (same partition), so a crash never leaves half a link.

An engagement may hold several of the partner's referrals ("Multiple referrals can be associated to a
single EngagementID", Partner Center's referral resources): each has its own link, and its engagement row
is `eng-<engagement>|<referral>`, found by a range query over the engagement's prefix. Links written before
that kept one `eng-<engagement>` row per engagement; those are still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from concurrent.futures import ThreadPoolExecutor

from shared.errors import AlreadyExists
from shared.models.records import Link
from shared.store.tables import Table, pack, unpack

PARTITION = "link"
SCAN_FACTOR = 4
"""`find` reads key ranges while they hold at most this many rows an id asked for, and reads by key beyond."""
READERS = 8
"""Point reads `find` keeps in flight: each waits for a round trip (5-10 ms to Azure), so one after another
would make a batch of 2,000 wait seconds. The clients are shared by threads already (the host's workers)."""
LINKS_PER_TRANSACTION = 33
"""Up to three rows a link, and a transaction holds at most 100 entities."""


ENGAGEMENT_SEPARATOR = "|"
"""Between the engagement id and the referral id of an engagement row (a GUID never holds one)."""


def _row(side: str, record_id: str) -> str:
    return f"{side}-{record_id}"


def _engagement_row(engagement_id: str, referral_id: str) -> str:
    return f"{_row('eng', engagement_id)}{ENGAGEMENT_SEPARATOR}{referral_id}"


class LinkStore:
    """Both directions of every link, in one partition so they can be written atomically."""

    def __init__(self, table: Table) -> None:
        self.table = table

    @staticmethod
    def _link(entity: dict[str, Any]) -> Link:
        link = Link.model_validate(unpack(entity))
        link.etag = entity.get("etag")
        return link

    def _get(self, row: str) -> Link | None:
        entity = self.table.get(PARTITION, row)
        return None if entity is None else self._link(entity)

    def get_by_referral(self, referral_id: str) -> Link | None:
        return self._get(_row("ref", referral_id))

    def get_by_opportunity(self, opportunity_id: str) -> Link | None:
        return self._get(_row("opp", opportunity_id))

    def list_by_engagement(self, engagement_id: str) -> list[Link]:
        """Every link of the partner's referrals in one co-sell engagement (one range query), oldest first."""
        prefix = _engagement_row(engagement_id, "")
        upper = prefix[:-1] + chr(ord(ENGAGEMENT_SEPARATOR) + 1)
        found: dict[str, Link] = {}
        for entity in self.table.query("PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                                       {"pk": PARTITION, "lo": prefix, "hi": upper}):
            link = self._link(entity)
            found[link.referral_id] = link
        legacy = self._get(_row("eng", engagement_id))  # one row per engagement, as written before
        if legacy is not None:
            found.setdefault(legacy.referral_id, legacy)
        return sorted(found.values(), key=lambda link: link.created_at)

    @staticmethod
    def _rows(link: Link) -> list[str]:
        rows = [_row("ref", link.referral_id), _row("opp", link.opportunity_id)]
        return rows + ([_engagement_row(link.engagement_id, link.referral_id)] if link.engagement_id else [])

    def create(self, link: Link) -> Link:
        """Write both rows at once.

        Raises:
            AlreadyExists: the referral or the opportunity is already linked (possibly by a racing writer);
                another referral of the same engagement is not in the way.
        """
        values = pack(link.model_dump(mode="json"))
        operations = [("create", {"PartitionKey": PARTITION, "RowKey": row, **values}) for row in self._rows(link)]
        try:
            self.table.transaction(operations, what=f"link {link.referral_id} <-> {link.opportunity_id}")
        except AlreadyExists:
            raise AlreadyExists(
                f"referral {link.referral_id} or opportunity {link.opportunity_id} is already linked"
            ) from None
        return link.model_copy()

    def find(self, *, referral_ids: Iterable[str] = (), opportunity_ids: Iterable[str] = ()) -> list[Link]:
        """The links of many referrals and opportunities (the backfill checks a batch at a time).

        Never a filter of row keys joined with `or`: Table Storage runs it as a scan of the whole partition
        ("Design for querying"), and every link is in this one partition. Instead, while the partition is
        small next to the ids asked for (a first backfill), the ids' ranges are read page by page (one query
        instead of thousands of reads); once it holds more than SCAN_FACTOR rows an id, each link is read by
        key (a point read costs the same at 100 links or 100,000). Either way the rows read per id stay
        bounded, so a backfill's cost grows with its size only.
        """
        rows = [_row("ref", i) for i in dict.fromkeys(referral_ids)] + \
               [_row("opp", i) for i in dict.fromkeys(opportunity_ids)]
        if not rows:
            return []
        scanned = self._scan(rows, limit=SCAN_FACTOR * len(rows))
        if scanned is not None:
            return scanned
        with ThreadPoolExecutor(max_workers=min(READERS, len(rows)), thread_name_prefix="link-read") as pool:
            return [link for link in pool.map(self._get, rows) if link is not None]

    def _scan(self, rows: list[str], *, limit: int) -> list[Link] | None:
        """The links of `rows`, read through their sides' key ranges; None as soon as more than `limit` rows
        have been read (the partition is too large for that to pay)."""
        wanted, found, read = set(rows), [], 0
        for side in sorted({row.partition("-")[0] for row in wanted}):
            for entity in self.table.query("PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                                           {"pk": PARTITION, "lo": f"{side}-", "hi": f"{side}."},
                                           page_size=min(1000, limit + 1)):
                read += 1
                if read > limit:
                    return None
                if entity.get("RowKey") in wanted:
                    found.append(self._link(entity))
        return found

    def create_many(self, links: Sequence[Link]) -> list[Link]:
        """Write many links, 33 to a transaction; a transaction refused because one of its referrals or
        opportunities is already linked is written again link by link.

        Returns:
            The links that were not written because their referral or opportunity was already linked.
        """
        refused: list[Link] = []
        for start in range(0, len(links), LINKS_PER_TRANSACTION):
            chunk = links[start:start + LINKS_PER_TRANSACTION]
            operations = [("create", {"PartitionKey": PARTITION, "RowKey": row, **pack(link.model_dump(mode="json"))})
                          for link in chunk for row in self._rows(link)]
            try:
                self.table.transaction(operations, what=f"{len(chunk)} links")
            except AlreadyExists:
                for link in chunk:
                    try:
                        self.create(link)
                    except AlreadyExists:
                        refused.append(link)
        return refused

    def delete(self, link: Link) -> None:
        rows = self._rows(link)
        legacy = self._get(_row("eng", link.engagement_id)) if link.engagement_id else None
        if legacy is not None and legacy.referral_id == link.referral_id:
            rows[-1] = _row("eng", link.engagement_id)  # written before engagements held several links
        operations = [("delete", {"PartitionKey": PARTITION, "RowKey": row}) for row in rows]
        self.table.transaction(operations, what=f"unlink {link.referral_id}")

    def list(self) -> Iterator[Link]:
        """Every link once (from its referral-side row)."""
        for entity in self.table.query("PartitionKey eq @pk and RowKey ge 'ref-' and RowKey lt 'ref.'",
                                       {"pk": PARTITION}):
            yield self._link(entity)
