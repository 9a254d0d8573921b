"""Batch gallery indexing: read a folder, archive or CSV of photos, analyse them across
processes, and enroll or cluster the faces.

- ``sources``: walk the input safely and lazily (archives are read into memory, never extracted).
- ``worker``: batched decode -> detect -> embed -> quality in a pool of processes.
- ``cluster``: group unlabelled face embeddings into proposed identities.
- ``indexer``: the job itself (dedupe by image SHA-256, one transaction per batch, report).
"""
