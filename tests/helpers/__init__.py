"""Helpers shared by the test packages (``from tests.helpers.configs import compose_train``)."""
