"""The use case every front end calls: read a checkpoint as data, apply a freeze spec, write, report.

    report = freeze_file(src, spec, dst)          # dst=None: inspection / dry run, nothing written

The CLI, the service's workers and the benchmarks all go through here.
"""
