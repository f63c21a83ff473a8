"""Conversion between API versions.

`convert`: pure v1beta1 <-> v1 functions; `webhook`: the server; `migration`: storage-version migration.
"""
