"""Entry point of the function app (Python v2 programming model): registers the blueprints.

Importing this must stay fast and must never fail: an exception here makes the host find no
functions at all. So no settings are read and no heavy library is imported at module level; each
handler reads settings when it runs and reports a bad one in its own response or log.
"""

import azure.functions as func

from functions import (
    api_assist,
    api_connections,
    api_discovery,
    api_exports,
    api_reports,
    api_runs,
    console,
    events,
    timer,
    worker,
)

# Every API route needs a function key (x-functions-key header or ?code=); roles: shared/auth.py.
# The console's page and assets (functions/console.py) are the one anonymous exception: no data.
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    api_connections.bp,
    api_discovery.bp,
    api_exports.bp,
    api_reports.bp,
    api_runs.bp,
    api_assist.bp,
    console.bp,
    events.bp,
    timer.bp,
    worker.bp,
):
    app.register_functions(blueprint)
