"""Video and streams: detect faces per frame, track them, identify each track once.

``identity watch SOURCE`` (``services/cli/watch.py``) reads a file, an RTSP/HTTP URL or a camera
index, and prints JSON lines events: ``track_started``, ``identified``, ``track_ended``, then a
``summary`` with frames per second. docs/mesh.md describes it.
"""

from identity.video.identify import GalleryIdentifier, Identifier, Match, StoreIdentifier
from identity.video.tracker import IoUTracker, Track
from identity.video.watch import VideoWatcher, open_source

__all__ = [
    "GalleryIdentifier",
    "Identifier",
    "IoUTracker",
    "Match",
    "StoreIdentifier",
    "Track",
    "VideoWatcher",
    "open_source",
]
