"""Observe: watch caches of everything the reconcile reads; one snapshot per instance, no API reads on the hot path."""
