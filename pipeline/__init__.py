"""sendtime's pipeline: ingest, transform (dbt), validate, publish, schedule, and the CLI."""

__version__ = "0.1.0"
