"""Yun: an open-model AI cloud."""
