"""Access to the Kubernetes API: `api.KubeApi` is the only code that sends requests."""
