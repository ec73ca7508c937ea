"""The operators' dashboard: server-rendered pages, actions and live status (Channels)."""
