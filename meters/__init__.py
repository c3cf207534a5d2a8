"""Simulated smart meters: household demand, reading schedules and recorded-data replay."""
