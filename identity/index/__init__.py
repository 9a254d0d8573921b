"""FAISS 1:N index over face templates: cosine similarity as inner product on unit vectors.

``FaceIndex`` is derived data. Postgres is the truth; an index can always be rebuilt from the
store with ``FaceIndex(dim, factory)`` + ``add(template_ids, embeddings)``, and a snapshot carries
a caller-supplied ``watermark`` (e.g. the last template id / change sequence it contains) so the
service can load the snapshot and replay only what the store changed since.

Design notes (why, not what):

* Any FAISS ``index_factory`` string works ("Flat", "HNSW32", "IVF1024,PQ64x4fs,RFlat", ...). The
  index is wrapped in ``IndexIDMap2`` so FAISS returns our int64 template ids directly, except
  a bare IVF index (optionally behind a pre-transform such as OPQ): IVF lists store our ids
  natively, and ``IndexIDMap2.remove_ids`` over an IVF corrupts the id map (IDMap assumes the
  sub-index renumbers sequentially after a removal, which IVF does not).
* **Untrained indexes** (IVF, PQ) cannot take vectors before k-means has run, and k-means on a
  handful of points gives useless centroids (FAISS warns below 39 points per centroid). So vectors
  are buffered in memory and searched exactly (brute force) until ``min_train_points`` exist; then
  the index is trained on (a sample of) the buffer and the buffer moves in. Results are exact
  below the threshold and approximate above it, at every size.
* **Removal**: Flat, IVF and PQ support ``remove_ids``. HNSW graphs and refine wrappers ("RFlat")
  do not. For those, removed ids go into a **tombstone** set: searches over-fetch (k + the number
  of tombstones that could be in the way, growing until k live results are found) and filter
  tombstones out, so a removed id is never returned. When tombstones exceed ``compact_fraction``
  of the live count the index is **compacted**: live vectors are reconstructed from the index
  (exact for HNSW-Flat and RFlat storage) and re-added to an empty clone that keeps the training.
  An index whose vectors cannot be reconstructed keeps its tombstones and logs a warning; the
  caller should rebuild it from the store.
* **Thread safety**: a readers-writer lock. FAISS searches on a CPU index are const and
  thread-safe, so concurrent searches run in parallel; adds, removals, training and compaction
  take the lock exclusively.
* **GPU**: with ``use_gpu`` and a FAISS build that sees a GPU, the index is cloned to GPU 0
  (faiss-gpu comes with the ``gpu`` extra). Index types FAISS cannot put on a GPU (HNSW) stay on
  the CPU, with a log line. Snapshots are always written from a CPU copy.

The package, one job per module: ``face_index`` (the ``FaceIndex`` class and ``index_for``),
``faiss_chain`` (what a FAISS index is made of and its search knobs), ``topk`` (searching past
tombstones, the exact buffer, merging), ``snapshot`` (the file format), ``rwlock`` (the lock).
"""

from identity.index.face_index import FaceIndex, index_for

__all__ = ["FaceIndex", "index_for"]
