"""Reconcile decisions: desired versus observed, status and conditions. No kopf import here.

`instance.Reconciler` is the entry point the kopf handlers call; `children` and `status` are pure
decision functions; `deletion` is the finalizer's state machine.
"""
