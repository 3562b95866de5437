"""Analysis, from the records only: record queries, tables, the claims versus ours, the findings,
figures, and the probes of the defenses themselves (LWTA winners and gradients, k-WTA, PNI, WCA)."""
