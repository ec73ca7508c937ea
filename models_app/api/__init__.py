"""The management REST API under /api/ (DRF): thin views over the services."""
