"""Face identity library: detection, alignment, embeddings, quality, indexes, calibration.

The library never imports FastAPI; the service in ``services/`` builds on it.
"""

from identity.errors import IdentityError
from identity.faces import Faces

__all__ = ["Faces", "IdentityError"]
__version__ = "0.1.0"
