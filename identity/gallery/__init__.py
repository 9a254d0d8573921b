"""Batch gallery indexing: read a folder, archive or CSV of photos, analyse them across
processes, and enroll or cluster the faces.

- ``sources``: walk the input safely and lazily (archives are read into memory, never extracted).
- ``files``: reading without blocking on a FIFO, storable names and labels, the labels CSV.
- ``limits``: a job's bounds (bytes decompressed, time) and its cancel flag, checked as it reads.
- ``worker``: batched decode -> detect -> embed -> quality in a pool of processes.
- ``cluster``: group unlabelled face embeddings into proposed identities.
- ``ray_engine``: the same batches on Ray Data (``--engine ray``).
The commands (``identity ingest PATH --collection C``, ``identity jobs cancel|list``) live in
``services/cli/ingest.py``.

The job itself (dedupe by image SHA-256, one transaction per batch, the report) needs the store,
so it lives in the service layer: ``services.gallery.run_ingest``.
"""
