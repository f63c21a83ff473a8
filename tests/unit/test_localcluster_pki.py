"""The harness's PKI and tool lookup, checked on the files they produce (no cluster needed)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sampledb_localcluster import OPERATOR_USER, issue_serving_cert
from sampledb_localcluster.bootstrap import write_pki
from sampledb_localcluster.components import ClusterContext
from sampledb_localcluster.layout import StateLayout
from sampledb_localcluster.network import NodeNetwork
from sampledb_localcluster.tools import VERSIONS_FILE, load_versions, tool_path, tools_dir


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> StateLayout:
    layout = StateLayout(tmp_path_factory.mktemp("pki-cluster"))
    layout.reset()
    write_pki(ClusterContext(layout, {}))
    return layout


def test_a_real_node_gets_its_identities_and_the_api_server_its_node_facing_address(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    layout.reset()
    network = NodeNetwork(3)
    write_pki(ClusterContext(layout, {}, network))
    kubelet = load(layout.cert("kubelet").cert).subject
    assert kubelet.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:sampledb-node"
    assert kubelet.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    sans = load(layout.cert("apiserver").cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {network.node_ip, network.first_service_ip} <= set(sans.get_values_for_type(x509.IPAddress))
    serving = load(layout.cert("kubelet-serving").cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert serving.value.get_values_for_type(x509.IPAddress) == [network.node_ip]


def test_every_certificate_is_signed_by_the_ca(layout: StateLayout) -> None:
    ca = load(layout.ca.cert)
    for name in ("apiserver", "admin", "operator", "kube-controller-manager", "kube-scheduler"):
        load(layout.cert(name).cert).verify_directly_issued_by(ca)


def test_apiserver_cert_covers_loopback_and_the_in_cluster_names(layout: StateLayout) -> None:
    sans = load(layout.cert("apiserver").cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes", "kubernetes.default.svc"} <= set(sans.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")} <= set(
        sans.get_values_for_type(x509.IPAddress)
    )


def test_operator_client_cert_maps_to_the_service_account_user_and_groups(layout: StateLayout) -> None:
    cert = load(layout.cert("operator").cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == OPERATOR_USER
    groups = {attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    assert groups == {"system:serviceaccounts", "system:serviceaccounts:sampledb-system", "system:authenticated"}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_admin_is_in_system_masters(layout: StateLayout) -> None:
    cert = load(layout.cert("admin").cert)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]


def test_issue_serving_cert_with_the_cluster_ca(layout: StateLayout, tmp_path: Path) -> None:
    cert_path, key_path = issue_serving_cert(
        "webhook.sampledb-system.svc",
        ["127.0.0.1"],
        ["localhost"],
        tmp_path,
        ca_cert=layout.ca.cert,
        ca_key=layout.ca.key,
    )
    cert = load(cert_path)
    cert.verify_directly_issued_by(load(layout.ca.cert))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.sampledb-system.svc", "localhost"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert os.stat(key_path).st_mode & 0o077 == 0, "private keys are owner-only"


def test_versions_file_pins_every_cluster_binary() -> None:
    versions = load_versions()
    assert versions["KUBERNETES_VERSION"].startswith("v1.")
    expected = tools_dir() / f"kube-apiserver-{versions['KUBERNETES_VERSION']}" / "kube-apiserver"
    assert tool_path("kube-apiserver") == expected
    assert tool_path("kwok") == tools_dir() / f"kwok-{versions['KWOK_VERSION']}" / "kwok"


def test_load_versions_handles_comments_quotes_and_export(tmp_path: Path) -> None:
    env = tmp_path / "versions.env"
    env.write_text("# comment\n\nexport A=v1\nB='v2'\nC=\"v3\"\n")
    assert load_versions(env) == {"A": "v1", "B": "v2", "C": "v3"}
    assert VERSIONS_FILE.name == "versions.env"


def test_tools_dir_honours_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAMPLEDB_TOOLS_DIR", str(tmp_path))
    assert tools_dir() == tmp_path
