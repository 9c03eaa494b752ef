"""Shared test plumbing. Each stand-in lives in its own plugin module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.sandbox",
    "tests.fixtures.keyvault",
    "tests.fixtures.app",
    "tests.fixtures.world",
    "tests.fixtures.serve",
]
