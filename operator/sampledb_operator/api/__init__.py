"""The SampleDB API: pydantic models per version, the single source of the CRD schemas.

`v1` is the storage (hub) version; `v1beta1` is the older flat shape, still served.
"""

GROUP = "sampledb.io"
KIND = "SampleDB"
PLURAL = "sampledbs"
SINGULAR = "sampledb"
SHORT_NAMES = ["sdb"]
STORAGE_VERSION = "v1"
