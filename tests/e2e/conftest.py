"""E2E fixtures: the integration fixtures (CRDs, operator RBAC, admin client), reused as they are."""

from tests.integration.conftest import admin, apply, conversion_webhook, crds, operator_rbac, wait_for  # noqa: F401
