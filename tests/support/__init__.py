"""Helpers the test suite shares across packages: real and fake external services."""
