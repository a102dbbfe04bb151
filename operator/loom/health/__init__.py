"""Health: failure classification (exit codes, OOM, eviction, lost nodes, stuck pods) and remedies.

Pure: decisions over observed objects; no I/O.
"""
