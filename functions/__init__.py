"""Azure Functions blueprints (timer, queue worker, HTTP API), registered by function_app.py."""

import azure.functions as func

__all__ = ["new_blueprint"]


def new_blueprint() -> func.Blueprint:
    # Blueprint's constructor has no annotations in azure-functions 1.x; one typed place to create them.
    return func.Blueprint()  # type: ignore[no-untyped-call]
