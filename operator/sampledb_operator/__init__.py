"""SampleDB operator: runs PostgreSQL on Kubernetes through the `SampleDB` custom resource."""

__version__ = "0.1.0"
