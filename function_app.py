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
    http,
    timer,
    worker,
)

# With AUTH_MODE=key every API route needs a function key (x-functions-key header or ?code=); with
# AUTH_MODE=entra App Service Authentication signs callers in instead (functions/http.py,
# api_auth_level; roles: shared/auth.py). The console's page and assets (functions/console.py) are
# anonymous in both modes: they hold no data.
app = func.FunctionApp(http_auth_level=http.API_AUTH_LEVEL)

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
