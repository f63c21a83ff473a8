"""Pure builders: every child manifest, checked as data."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sampledb_operator.api import v1
from sampledb_operator.jobs.common import PASSFILE_FROM_SECRET
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.migrate import migration_job
from sampledb_operator.jobs.snapshot import snapshot_job, snapshot_pvc
from sampledb_operator.reconcile import children
from sampledb_operator.reconcile.children import canonical_json
from sampledb_operator.resources import config, pdb, secret, services, statefulset
from sampledb_operator.resources.instance import ROLE_LABEL, Instance
from sampledb_operator.settings import Settings
from tests.model_strategies import model_objects
from tests.unit.conftest import make_instance


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    """The Pod Security Standard "restricted" rules that a manifest alone can violate."""
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_sc.get("runAsUser", 1) != 0
    for container in pod_spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert not sc.get("privileged")
    allowed_volumes = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI"}
    for volume in pod_spec.get("volumes", []):
        assert set(volume) - {"name"} <= allowed_volumes, volume


def all_manifests(inst: Instance) -> list[dict[str, Any]]:
    return [
        config.config_map(inst),
        services.headless_service(inst),
        services.client_service(inst),
        statefulset.statefulset(inst),
        pdb.pod_disruption_budget(inst),
        init_job(inst),
        snapshot_job(inst),
    ]


def test_every_child_is_owned_labelled_and_namespaced(instance: Instance) -> None:
    for manifest in all_manifests(instance):
        meta = manifest["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"]["sampledb.io/instance"] == "db1"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "sampledb-operator"
        owner = meta["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("SampleDB", "uid-1", True)


def test_final_snapshot_volume_outlives_the_instance(instance: Instance) -> None:
    assert "ownerReferences" not in snapshot_pvc(instance)["metadata"]


@pytest.mark.parametrize("build", [statefulset.statefulset, init_job, snapshot_job])
def test_pods_pass_restricted_and_carry_no_secret_on_the_command_line(build: Any, instance: Instance) -> None:
    manifest = build(instance)
    pod_spec = manifest["spec"]["template"]["spec"]
    assert_restricted(pod_spec)
    for container in pod_spec["containers"]:
        command = json.dumps(container.get("command", []) + container.get("args", []))
        assert "PGPASSWORD=" not in command and "--password=" not in command
        for env in container.get("env", []):
            assert "valueFrom" not in env, f"{env['name']}: secrets reach our Pods as mounted files only"
            if "PASSWORD" in env["name"]:
                assert env["value"].startswith(f"{statefulset.CREDENTIALS_DIR}/"), env


def test_jobs_are_bounded(instance: Instance) -> None:
    for job in (init_job(instance), snapshot_job(instance)):
        assert job["spec"]["backoffLimit"] == 2
        assert job["spec"]["activeDeadlineSeconds"] == 3600
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_statefulset_shape(instance: Instance) -> None:
    sts = statefulset.statefulset(instance)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "db1-hl"
    assert container["image"] == "docker.io/library/postgres:17.6"
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= container.keys()
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    vct = sts["spec"]["volumeClaimTemplates"][0]
    assert vct["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in vct["spec"]


def test_user_overrides_reach_the_statefulset() -> None:
    inst = make_instance(
        {
            "postgres": {"version": 15, "image": "registry.local/pg:15.9"},
            "storage": {"size": "50Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "4Gi"}},
        }
    )
    sts = statefulset.statefulset(inst)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/pg:15.9"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "4Gi"}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def test_default_image_follows_the_major_version_and_settings() -> None:
    assert make_instance({"postgres": {"version": 15}}).image.endswith(":15.14")
    assert make_instance({"postgres": {"version": 16}}, images={16: "mirror/pg:16"}).image == "mirror/pg:16"


def test_parameter_change_rolls_the_pod() -> None:
    before = statefulset.statefulset(make_instance())
    after = statefulset.statefulset(make_instance({"postgres": {"parameters": {"work_mem": "64MB"}}}))
    key = statefulset.CONFIG_HASH_ANNOTATION
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_postgresql_conf_quotes_values() -> None:
    inst = make_instance({"postgres": {"parameters": {"work_mem": "64MB", "application_name": "it's"}}})
    conf = config.postgresql_conf(inst)
    assert "work_mem = '64MB'" in conf
    assert "application_name = 'it''s'" in conf
    assert conf.index("listen_addresses") < conf.index("work_mem")


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("port", "6000", "managed by the operator"),
        ("archive_command", "curl evil", "not allowed"),
        ("shared_preload_libraries", "x", "not allowed"),
        ("wrok_mem", "1MB", "not a PostgreSQL parameter"),
        ("work_mem", "1MB\nlisten_addresses='x'", "one line"),
    ],
)
def test_parameter_problems_name_the_field(name: str, value: str, reason: str) -> None:
    problems = config.parameter_problems({name: value})
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"spec.postgres.parameters.{name}: ")
    assert reason in str(problems[0])


def test_acceptable_parameters() -> None:
    assert (
        config.parameter_problems({"max_connections": "200", "DateStyle": "ISO", "pg_stat_statements.max": "5000"})
        == []
    )


def test_generated_secret_has_every_key(instance: Instance) -> None:
    manifest = secret.credentials_secret(instance, password="p1", superuser_password="p2")
    data = manifest["stringData"]
    assert set(secret.REQUIRED_KEYS) <= data.keys()
    assert data["uri"] == "postgresql://app:p1@db1.team-a.svc:5432/app"


def test_generated_passwords_are_strong_and_distinct() -> None:
    passwords = {secret.generate_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) >= 40 for p in passwords)


def test_services_and_pdb_select_the_database_pod(instance: Instance) -> None:
    selector = instance.selector_labels()
    assert services.headless_service(instance)["spec"]["clusterIP"] == "None"
    primary = {**selector, services.POD_NAME_LABEL: "db1-0"}
    assert services.client_service(instance)["spec"]["selector"] == primary
    assert services.read_only_service(instance) is None and services.any_service(instance) is None
    assert pdb.standbys_budget(instance) is None
    assert pdb.pod_disruption_budget(instance)["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    sts = statefulset.statefulset(instance)
    assert sts["spec"]["replicas"] == 1
    assert selector.items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_standbys_have_their_services_a_budget_of_their_own_and_spread() -> None:
    instance = dataclasses.replace(make_instance({"instances": 3}), current_primary="db1-2")
    selector = instance.selector_labels()
    primary = {**selector, services.POD_NAME_LABEL: "db1-2"}
    assert services.client_service(instance)["spec"]["selector"] == primary
    read_only = services.read_only_service(instance)
    assert read_only is not None and read_only["metadata"]["name"] == "db1-ro"
    assert read_only["spec"]["selector"] == {**selector, ROLE_LABEL: "replica"}
    everyone = services.any_service(instance)
    assert everyone is not None and everyone["metadata"]["name"] == "db1-r"
    assert everyone["spec"]["selector"] == selector
    assert pdb.pod_disruption_budget(instance)["spec"] == {"minAvailable": 1, "selector": {"matchLabels": primary}}
    standbys = pdb.standbys_budget(instance)
    assert standbys is not None and standbys["metadata"]["name"] == "db1-standbys"
    assert standbys["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {**selector, ROLE_LABEL: "replica"}}}
    sts = statefulset.statefulset(instance)
    assert sts["spec"]["replicas"] == 3
    spread = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term == {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}
    assert config.config_map(instance)["data"][config.PRIMARY_FILE] == "db1-2"
    assert instance.data_pvcs == ["data-db1-0", "data-db1-1", "data-db1-2"] and instance.primary_pvc == "data-db1-2"


@pytest.mark.parametrize(
    ("build", "keys"),
    [
        (init_job, [secret.SUPERUSER_PASSWORD_KEY, secret.PASSWORD_KEY]),
        (snapshot_job, [secret.SUPERUSER_PASSWORD_KEY]),
        (lambda inst: migration_job(inst, name="m", config_map="cm"), [secret.PASSWORD_KEY]),
    ],
)
def test_jobs_mount_only_the_credentials_they_use(build: Any, keys: list[str], instance: Instance) -> None:
    pod = build(instance)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "db1-credentials"
    assert [item["key"] for item in volume["secret"]["items"]] == keys
    assert volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": "credentials", "mountPath": statefulset.CREDENTIALS_DIR, "readOnly": True}


def test_password_file_becomes_a_private_libpq_passfile(tmp_path: Path) -> None:
    """The script prelude escapes `\\` and `:` (the passfile format) and writes the file 0600."""
    password_file, passfile = tmp_path / "password", tmp_path / "pgpass"
    password_file.write_text("a:b\\c")
    env = {"PASSWORD_FILE": str(password_file), "PGPASSFILE": str(passfile), "PATH": "/usr/bin:/bin"}
    subprocess.run(["/bin/sh", "-c", f"set -eu\n{PASSFILE_FROM_SECRET}"], env=env, check=True)
    assert passfile.read_text() == "*:*:*:*:a\\:b\\\\c"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    passfile.unlink()
    subprocess.run(["/bin/sh", "-c", f"set -eu\n{PASSFILE_FROM_SECRET}"], env={"PATH": "/usr/bin:/bin"}, check=True)
    assert not passfile.exists()  # no mounted password (a test's own PGPASSWORD): nothing written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_objects(v1.SampleDBSpec), st.text(min_size=1, max_size=8))
def test_fingerprints_are_the_stdlib_encodings_digests(spec: dict[str, Any], text: str) -> None:
    """The fast encoder behind every child's fingerprint writes `json.dumps`'s bytes: no digest changes.

    A change would patch every child of every SampleDB once after an operator upgrade. Any text
    (DEL and non-ASCII included) and every child of a random spec.
    """
    meta = {"name": "db1", "namespace": "ns", "uid": "u1", "generation": 1}
    try:
        inst = Instance.from_object({"metadata": meta, "spec": spec}, Settings())
    except ValidationError:
        assume(False)  # hypothesis fails the test when it can find too few valid specs
    manifests = [m for child in children.CHILDREN if (m := child.build(inst)) is not None]
    assert len(manifests) >= 5  # ConfigMap, two Services, StatefulSet, budget (and more as the spec asks)
    for value in [*manifests, {"text": text, "list": [text, 1, True, None]}]:
        assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
