# shellcheck shell=bash
# The local cluster's background processes, shared by up.sh and node.sh (sourced, not run).
# Each component NAME runs detached, logs to $dir/logs/NAME.log and has its pid in
# $dir/run/NAME.pid (down.sh stops every pid there). The sourcing script sets `dir`.
# shellcheck disable=SC2154  # dir

# NAME's process is running (NAME of the cluster in DIR, default this one's).
alive() { # name [dir]
  local in=${2:-$dir}
  [[ -f $in/run/$1.pid ]] && kill -0 "$(cat "$in/run/$1.pid")" 2>/dev/null
}

# Says why NAME failed, with the end of its log, and exits.
fail() { # name message
  echo "${0##*/}: $1 $2; the end of $dir/logs/$1.log:" >&2
  tail -n 30 "$dir/logs/$1.log" >&2 || true
  exit 1
}

# Starts NAME detached from this shell (it outlives the script), unless it already runs.
start() { # name command...
  local name=$1; shift
  alive "$name" && return 0
  setsid nohup "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/run/$name.pid"
}

# Polls COMMAND until it succeeds; fails as soon as NAME exits, or after SECONDS.
wait_until() { # name seconds command...
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "exited"
    ((SECONDS < deadline)) || fail "$name" "was not ready after $seconds s"
    sleep 0.2
  done
}
