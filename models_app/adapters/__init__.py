"""Adapters: implementations of the ports the core and the gateway define.

Each one writes only the rows its port owns; every other write goes through a service.
"""
