"""Operator tooling: provisioning a fleet, ``meterctl``'s commands (meters, tariffs, billing
periods, statements) and the grid-alert emitter.

It works straight against the chain with the operator's keys and writes the off-chain customer
records. It sits above the system: it may use ``common`` and the meters' identity and load
model, while ``server`` and ``meters`` never import it.
"""
