"""The bottom layer: errors, paths, atomic files, runtime (device, threads, seeds), randomness
switches, model modes, provenance, statistics, data-parallel helpers and the registries.
It imports nothing else of the package."""
