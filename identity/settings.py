"""All settings in one object, read from the environment (``IDENTITY_`` prefix) and ``.env``.

No other module reads ``os.environ``: the CLI builds one ``Settings`` and passes it down, the
service injects it with FastAPI ``Depends``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDENTITY_", env_file=".env", extra="ignore")

    # where things live ---------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("./data"),
        description="Embedded Postgres cluster, index snapshots, thumbnails, calibration files.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Extra folder searched for model weights (after package data, before the cache).",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "IDENTITY_DATABASE_URL"),
        description="postgresql+psycopg://... ; unset = embedded Postgres in data_dir.",
    )

    # models --------------------------------------------------------------------------------
    detector: str = Field(default="retinaface_mnet025", description="Detector manifest name.")
    embedder: str = Field(
        default="arcface_w600k_mbf_int8",
        description="Face embedder manifest name. The default ships inside the package "
        "(InsightFace weights: non-commercial research use); dlib_resnet_v1 is the CC0 choice.",
    )
    body_embedder: str = Field(
        default="reid_intel_0287",
        description="Person re-ID embedder manifest name (reid_intel_0287/0288 need the body "
        "extra; osnet_x0_25_msmt17 runs on onnxruntime).",
    )
    person_detector: str = Field(
        default="person_det_adas_0002",
        description="Person detector when no boxes are given: person_det_adas_0002 (SSD, body "
        "extra), hog (built into OpenCV, baseline), mediapipe_pose (one person per image) or "
        "scrfd_person_2.5g (models pull).",
    )
    dlib_runtime: Literal["auto", "onnxruntime", "dlib"] = Field(
        default="auto",
        description="What runs dlib's face descriptor network: onnxruntime on a one-time ONNX "
        "conversion (several times faster), dlib's own loop, or auto (onnxruntime when the onnx "
        "package is installed).",
    )
    onnx_providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="Tried in order; providers that this onnxruntime build lacks are skipped.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime threads per run. 0 = adaptive on the CPU: every core for a run "
        "alone (lowest latency), one thread for a run that starts while another thread is busy "
        "with image work, decoding included (most throughput; identity/runtime.py "
        "AdaptiveSession).",
    )
    micro_batch: bool = Field(
        default=False,
        description="Run the images of concurrent requests through the models together, one "
        "batch at a time (identity/microbatch.py), instead of side by side. Measured "
        "(docs/service.md): it helped on a machine busy with other work and hurt on a quiet one, "
        "so it is off by default.",
    )
    micro_batch_max: int = Field(default=8, ge=1, le=64, description="Images per micro-batch.")
    onnx_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's threads busy-wait after each run: slightly faster for one "
        "stream on an idle machine, much slower when models or requests share the cores "
        "(docs/service.md, bench/api.py).",
    )
    model_idle_unload_s: float = Field(default=600.0, description="Unload models idle this long.")

    # detection -----------------------------------------------------------------------------
    det_threshold: float = 0.5
    det_nms_threshold: float = 0.4
    det_max_side: int = Field(default=640, description="Images are resized so the long side fits.")
    min_face_px: float = Field(
        default=20.0, description="Faces with a smaller box side are dropped."
    )

    # images --------------------------------------------------------------------------------
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000

    # quality gate (enrollment) -------------------------------------------------------------
    enroll_min_quality: float = Field(
        default=0.1,
        description="Enrollment gate on the fused quality: fitted on celeba500 to refuse 2.5% of "
        "ordinary faces (at most 3% on held-out people; bench/erc.py, docs/calibration.md).",
    )
    enroll_min_det_score: float = 0.6
    enroll_min_inter_ocular_px: float = 20.0
    enroll_max_abs_yaw: float = 45.0

    # dense face geometry (MediaPipe FaceMesh, the `mesh` extra; docs/mesh.md) ----------------
    quality_mesh: bool = Field(
        default=True,
        description="Run FaceMesh on each face for pose and eye signals in quality; skipped "
        "(5-landmark estimate stays) when mediapipe is not installed.",
    )
    mesh_landmarks: bool = Field(
        default=False,
        description="Replace the detector's 5 landmarks with mesh points before alignment.",
    )
    mesh_landmark_eyes: str = Field(
        default="iris",
        description="Eye points from the mesh: 'iris' centres or eye 'corners' midpoint.",
    )
    eyes_closed_ear: float = Field(
        default=0.12, description="Both eyes' aspect ratio below this = eyes closed."
    )

    # decisions -----------------------------------------------------------------------------
    default_far: float = Field(default=1e-3, description="FAR whose threshold decides a match.")

    # index ---------------------------------------------------------------------------------
    index_factory: str = Field(
        default="Flat",
        description="FAISS index_factory string (inner product); e.g. HNSW32, IVF4096,PQ64.",
    )
    index_params: dict[str, float] = Field(
        default_factory=dict,
        description="FAISS search knobs for every index, as JSON, e.g. "
        '{"nprobe": 64, "efSearch": 128, "k_factor": 8}; unset ones take identity.index defaults '
        "(half of the IVF lists, efSearch 256, k_factor 8).",
    )
    index_snapshot_every: int = Field(default=1000, description="Snapshot after this many changes.")
    use_gpu_index: bool = False

    # service -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = 50 * 1024 * 1024
    session_secret: str | None = Field(
        default=None, description="Signs dashboard cookies; generated into data_dir when unset."
    )
    store_thumbnails: bool = True

    # batch gallery indexing ----------------------------------------------------------------
    gallery_roots: list[Path] = Field(
        default_factory=list,
        description="Server folders an API indexing job may read (path jobs); empty = uploads only.",
    )
    cluster_far: float = Field(
        default=1e-4,
        description="FAR whose threshold links two unlabelled faces when clustering a gallery.",
    )
    index_batch_size: int = Field(default=8, description="Images per batch in gallery indexing.")
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_ADDRESS", "IDENTITY_RAY_ADDRESS"),
        description="Ray cluster for `identity ingest --engine ray` (ray://head:10001, auto); "
        "unset = a local Ray instance.",
    )

    # biometric data at rest and erasure (identity/sealing.py, docs/security.md) -------------
    kek: SecretStr | None = Field(
        default=None,
        description="Key-encryption key (base64 or hex of 32 bytes); wins over kek_file.",
    )
    kek_file: Path | None = Field(
        default=None,
        description="File holding the KEK; unset = data_dir/keys/kek, created 0600 on first start.",
    )
    kek_previous: list[SecretStr] = Field(
        default_factory=list,
        description="Other KEKs accepted for unwrapping data keys (JSON list), e.g. the old one "
        "while `identity keys rotate-kek` runs beside a service started with the new one.",
    )
    erase_vacuum: Literal["full", "plain", "off"] = Field(
        default="full",
        description="After an erase: VACUUM FULL the biometric tables (rewrites them, so no dead "
        "tuple keeps the erased rows' bytes; locks each table while it runs), plain VACUUM, or "
        "nothing (autovacuum decides).",
    )

    # presentation-attack detection (liveness; docs/liveness.md) ------------------------------
    liveness_models: list[str] = Field(
        default_factory=lambda: ["pad_minifasnet_v2_2.7_80", "pad_minifasnet_v1se_4.0_80"],
        description="PAD manifests whose live probabilities are averaged (upstream's decision).",
    )
    liveness_bpcer: float = Field(
        default=0.01,
        description="BPCER (share of live faces refused) whose calibrated threshold decides.",
    )
    liveness_min_face_px: float = Field(
        default=64.0, description="Faces with a smaller box side get no liveness score."
    )
    liveness_border_margin: float = Field(
        default=0.02,
        description="Faces whose box comes closer to an image edge than this share of its side "
        "(at least 1 px) count as cut by the border and get no liveness score.",
    )

    # batch job bounds (docs/security.md, "Batch jobs") -------------------------------------
    # A compressed tar cannot skip a member without decompressing it, so a small archive can
    # declare terabytes; these bound what one job may decompress and how long it may run.
    job_max_bytes: int = Field(
        default=32 * 1024**3,
        description="Bytes one gallery job may read or decompress from its source, in all.",
    )
    job_max_member_bytes: int = Field(
        default=256 * 1024**2,
        description="Largest archive member a job decompresses (or decompresses to skip it).",
    )
    job_max_expansion: float = Field(
        default=100.0,
        description="Decompressed bytes per byte of a compressed archive (photos barely compress).",
    )
    job_max_seconds: float = Field(default=86_400.0, description="Wall-clock bound of one job.")
    job_max_member_seconds: float = Field(
        default=60.0, description="Wall-clock bound for reading (or skipping) one archive member."
    )

    # body matching (docs/body.md; bench/reid.py measures each choice on cuhk01) ---------------
    body_flip_average: bool = Field(
        default=True,
        description="Embed each person crop as seen and mirrored, and sum the two features.",
    )
    body_rerank: bool = Field(
        default=False,
        description="k-reciprocal re-ranking (Zhong et al. 2017) of the body identify shortlist.",
    )

    # vector store: where 1:N search runs (issue 15; docs/search.md) -------------------------
    vector_store: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="faiss: an in-process FAISS copy per worker (index_* settings); milvus: one "
        "shared Milvus collection per (collection, model), the milvus_* settings (`milvus` extra).",
    )
    milvus_uri: str = Field(
        default="http://127.0.0.1:19530",
        description="Milvus server (http://host:19530) or a milvus-lite file path (one process).",
    )
    milvus_token: str | None = Field(default=None, description="user:password or an API token.")
    milvus_database: str | None = Field(
        default=None, description="Milvus database; unset = default."
    )
    milvus_collection_prefix: str = Field(
        default="identity",
        description="Milvus collection names are <prefix>_<collection id>_<model>.",
    )
    milvus_index_type: str = Field(
        default="HNSW", description="HNSW, IVF_FLAT, IVF_PQ, FLAT, or a GPU_* type the server has."
    )
    milvus_index_params: dict[str, int | float | str] = Field(
        default_factory=dict,
        description='Build params as JSON, e.g. {"M": 32, "efConstruction": 200} or {"nlist": 1024}; '
        "unset ones take services.milvus_index defaults.",
    )
    milvus_search_params: dict[str, int | float | str] = Field(
        default_factory=dict,
        description='Search params as JSON, e.g. {"ef": 256} or {"nprobe": 64}; unset = ef 256 '
        "(HNSW) or half of the lists (IVF), as for FAISS.",
    )
    milvus_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        default="Strong",
        description="Search consistency; Strong = a decision sees every write acknowledged before it.",
    )
    milvus_graceful_time_s: float = Field(
        default=5.0,
        description="The server's common.gracefulTime: Strong searches switch to Bounded (no wait "
        "for the next time tick) once the collection's last change is older than this; 0 = never.",
    )

    # sign-in throttle and /metrics access (docs/security.md) -----------------------------------
    auth_fail_burst: int = Field(
        default=20,
        description="Failed API-key checks one client address or one key prefix may make before "
        "further attempts get 429 (per worker process; 0 = no throttle).",
    )
    auth_fail_per_minute: float = Field(
        default=10.0, description="Failed checks the throttle forgives per minute after the burst."
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token for /metrics (Prometheus `authorization`); unset = an admin "
        "API key is needed (as a Bearer token or X-API-Key).",
    )

    # request hardening: bounded memory and work per request (docs/security.md) ----------------
    decode_max_side: int = Field(
        default=2560,
        description="Request images are decoded with the long side at most this many pixels "
        "(JPEG at a reduced DCT scale, others shrunk after decoding); 4x the detector's input, so "
        "faces keep their detail for the embedder. 0 = full size.",
        ge=0,
    )
    decode_detect_side: int = Field(
        default=1280,
        description="JPEG uploads are first decoded at the DCT scale that brings the long side "
        "within this (2x the detector's input: detection loses nothing). A face found there with "
        "fewer pixels between the eyes than the embedder's aligned crop has is analysed on a "
        "second decode at decode_max_side, so no face is embedded from fewer pixels than before. "
        "0 = one decode at decode_max_side.",
        ge=0,
    )
    inference_workers: int = Field(
        default=3,
        ge=1,
        description="Image requests (multipart uploads) analysed at once per process; each holds "
        "one decoded image and the models' working memory. 3 on 2 cores: the Python parts of one "
        "request (decode, alignment) overlap the others' inference (14.7 -> 15.8 verify/s at 8 "
        "clients; 4 gave no more).",
    )
    inference_queue: int = Field(
        default=16,
        ge=0,
        description="Image requests that may wait for a worker; beyond that the service answers "
        "503 with Retry-After instead of queueing more.",
    )
    inference_queue_timeout_s: float = Field(
        default=30.0, gt=0, description="A queued request waiting longer than this gets the 503."
    )
    enroll_max_files: int = Field(
        default=20,
        ge=1,
        description="Images per enrollment request (API and dashboard); more is a 413 naming the "
        "cap. Larger sets go through a batch job (docs/batch.md).",
    )

    # model migration: what a template keeps so another model can re-embed it --------------
    keep_face_crops: bool = Field(
        default=True,
        description="Keep, per template, a sealed source crop (the face with a margin, at most "
        "face_crop_side px) so `identity templates migrate` can re-embed it with another model. "
        "Off for deployments that must not keep face images: migration then needs the photos "
        "again (docs/model-migration.md).",
    )
    face_crop_side: int = Field(
        default=320,
        ge=128,
        le=1024,
        description="Long side in pixels of a kept source crop (the face box is half of it).",
    )
    migrate_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Templates re-embedded per committed batch."
    )

    # which of an identity's templates decide (docs/calibration.md, "Template quality policy") --
    template_quality_policy: Literal["all", "gate"] = Field(
        default="all",
        description="'all': every template of an identity decides (best similarity wins). "
        "'gate': templates whose stored quality is below enroll_min_quality are ignored when "
        "the identity has at least one at or above it. Default 'all': on celeba500 'gate' "
        "lowered the FMR but raised the FNMR, also at a held-out FMR (bench/template_policy.py).",
    )

    @property
    def calibration_dir(self) -> Path:
        return self.data_dir / "calibration"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def model_cache_dir(self) -> Path:
        """Where ``identity models pull`` writes downloaded weights."""
        return self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
