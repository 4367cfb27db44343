"""What every cloud's deployment shares: the Automation API seam (``automation``), the dry-run
plan under Pulumi's mocks (``plan``), the monthly estimate from a dated price table (``cost``),
the master's boot script from its template (``master_boot``) and checks of settings
(``validation``)."""
