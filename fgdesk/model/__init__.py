"""Backbone, multi-scale attention, heads and the MoCo pair (torch only, no Qt)."""
