"""Certificates and keys: the store, CAs, forged leaves and their cache, trust stores and
upstream validation. Import the modules directly; this package imports nothing."""
