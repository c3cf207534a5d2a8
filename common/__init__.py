"""Code shared by the server, the meters and the scripts: one definition of each thing.

Modules: ``settings`` (environment and ``.env``), ``errors`` (the error tree and its stable
codes), ``eip712`` (the signed reading and login types), ``messages`` (the wire schema),
``tariff`` (the reference bill arithmetic), ``compiler`` and ``deployment`` (contract
artifacts), ``chain`` (the one client layer that signs and sends transactions), ``logs``
(structured log lines).
"""
