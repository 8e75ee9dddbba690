"""`python -m shared doctor`: a read-only preflight of everything the connector needs from the world.

`checks` holds the verdicts (plain functions, tested without I/O); `probes` reads each service once and
hands the facts to them.
"""

from shared.doctor.checks import Verdict, exit_code

__all__ = ["Verdict", "exit_code"]
