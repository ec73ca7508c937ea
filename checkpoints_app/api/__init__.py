"""The checkpoint images' endpoints of the management REST API (under `/api/images/`)."""
