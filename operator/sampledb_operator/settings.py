"""Runtime settings of the operator process, read from `SAMPLEDB_*` environment variables.

One pydantic model so that a bad value (a typo in a Helm value, say) fails at start-up with a
message naming the variable, instead of surfacing later in a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "SAMPLEDB_"

# The official images by default. Any image works that meets the operand-image contract (README,
# "Operand images"): user postgres = uid/gid 999, the server's binaries on PATH. The local real
# node serves our Debian-built images under these names (sampledb_localcluster.images).
DEFAULT_IMAGES = {
    15: "docker.io/library/postgres:15.14",
    16: "docker.io/library/postgres:16.10",
    17: "docker.io/library/postgres:17.6",
    18: "docker.io/library/postgres:18.1",
}


class SettingsError(ValueError):
    """A `SAMPLEDB_*` variable has a value the operator cannot use."""


class Settings(BaseModel):
    """What the operator process needs to know that is not in any SampleDB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(
        (), description="Namespaces to watch (comma-separated in SAMPLEDB_NAMESPACES); empty means all."
    )
    images: dict[int, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGES))
    job_image: str | None = Field(None, description="Image for Jobs; the instance's image when unset.")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it.")
    health_port: int = Field(8081, ge=0, le=65535, description="Liveness/readiness (/healthz) port; 0 disables it.")
    json_logs: bool = False
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    leader_election: bool = Field(False, description="Hold a Lease so that only one replica acts.")
    lease_name: str = "sampledb-operator"
    lease_namespace: str = "sampledb-system"
    manage_crds: bool = Field(False, description="Bring this release's CRDs up to date at start-up (Helm).")
    webhook_service: str | None = Field(None, description="<namespace>/<name> of the conversion webhook Service.")
    webhook_ca_file: str | None = Field(None, description="CA bundle (PEM) of the webhook's serving certificate.")
    job_deadline_seconds: int = Field(3600, ge=60, description="activeDeadlineSeconds of every Job.")
    job_backoff_limit: int = Field(2, ge=0, le=10)
    upgrade_ready_timeout_seconds: int = Field(
        600, ge=30, description="How long a major upgrade waits for the new version's Pod before rolling back."
    )
    replication_probe_seconds: int = Field(
        30,
        ge=0,
        description="How often the primary's pg_stat_replication and pg_stat_archiver are read (pods/exec), per "
        "SampleDB with standbys or an object store, for status.servers, status.archive and their metrics; 0 never.",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from `SAMPLEDB_*` variables (the process environment by default)."""
        env = os.environ if env is None else env
        raw: dict[str, object] = {}
        for name in cls.model_fields:
            value = env.get(ENV_PREFIX + name.upper())
            if value is None or name == "images":
                continue
            raw[name] = tuple(filter(None, (v.strip() for v in value.split(",")))) if name == "namespaces" else value
        images = dict(DEFAULT_IMAGES)
        for major in DEFAULT_IMAGES:
            override = env.get(f"{ENV_PREFIX}IMAGE_PG{major}")
            if override:
                images[major] = override
        raw["images"] = images
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors())
            raise SettingsError(f"invalid operator settings: {problems}") from exc
