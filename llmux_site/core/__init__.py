"""The orchestration core: process supervision, engine control, switching.

Nothing in this package imports Django (a test enforces it). Collaborators such as
clocks, process runners, HTTP clients and reporters are passed in as arguments, so the
core is exercised in tests with real child processes and no database.
"""
