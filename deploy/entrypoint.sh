#!/bin/sh
# The container's entrypoint. `serve` (the default) migrates, then becomes the server (exec, so
# SIGTERM from `docker stop` reaches it and in-flight requests finish). Any other arguments run
# that commons-session command: `docker run IMAGE institutions add ...`, `... backup /data/x.db`.
set -eu

if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    commons-session migrate
    exec commons-session serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" --workers "${WORKERS:-2}" "$@"
fi
exec commons-session "$@"
